"""The event store: SQLite in WAL mode for events, their snapshots, people and embeddings.

An accepted event is committed (``synchronous=FULL``) before the API answers, so a crash or a
restart of the add-on never loses an event Home Assistant was told about. SQLite calls run on
one dedicated thread that owns the connection: the event loop never blocks on disk, and there
is exactly one writer. Retention trims by age and by count after inserts.

A write the disk refuses raises :class:`StorageFullError` (no space) or
:class:`StorageUnavailableError` (read-only file system, I/O error, locked by another process)
naming the data dir, and the store keeps the problem as a health issue until a write succeeds
again (or, for a full disk, until free space returns): reads keep working meanwhile, and no
event is ever reported as stored that is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from addon_server.reasoning.calibration import FeedbackRecord, Verdict, appearance, signature
from addon_server.reasoning.levels import LEVEL_RANK

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")
Vector = npt.NDArray[np.float32]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id          TEXT PRIMARY KEY,
    camera      TEXT NOT NULL,
    ts          REAL NOT NULL,
    level_rank  INTEGER NOT NULL,
    document    TEXT NOT NULL,
    snapshot    BLOB
);
CREATE INDEX IF NOT EXISTS events_camera_ts ON events (camera, ts);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS people (
    id       TEXT PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    person_id  TEXT REFERENCES people (id) ON DELETE CASCADE,
    camera     TEXT,
    event_id   TEXT,
    ts         REAL NOT NULL,
    vector     BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_kind_ts ON embeddings (kind, ts);
CREATE TABLE IF NOT EXISTS feedback (
    event_id  TEXT PRIMARY KEY,
    camera    TEXT NOT NULL,
    verdict   TEXT NOT NULL,
    ts        REAL NOT NULL,
    note      TEXT,
    event_ts  REAL NOT NULL,
    factors   TEXT NOT NULL,
    appearance TEXT
);
CREATE INDEX IF NOT EXISTS feedback_camera_ts ON feedback (camera, ts);
CREATE TABLE IF NOT EXISTS revisions (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id  TEXT NOT NULL,
    revision  INTEGER NOT NULL,
    document  TEXT NOT NULL,
    UNIQUE (event_id, revision)
);
"""
# revisions: every stored revision of every event (rule verdict, LLM refinement), in the order
# they were committed. ``seq`` is the event stream's message id: AUTOINCREMENT never reuses a
# number, even after retention deleted the newest rows, so a client resuming "after 41" after
# an add-on restart can never be handed a different message 42 than the one it missed.
# feedback keeps the event's time and rule factor names (a JSON list) beside the verdict, so
# what calibration learnt outlives the event's retention; CREATE ... IF NOT EXISTS is the
# migration of a database written before the table existed.
MAX_FEEDBACK_PER_CAMERA = 1000
"""The newest verdicts per camera that calibration compares a new event with."""


def new_id(now: float | None = None) -> str:
    """A sortable id: milliseconds since the epoch in hex, then randomness."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis:012x}{secrets.token_hex(6)}"


REVISION_FIELDS = (
    "revision",
    "phase",
    "updated_at",
    "risk_score",
    "risk_level",
    "factors",
    "summary",
    "llm_status",
)
"""What ``GET /v1/events/{id}`` lists of each stored revision (``revisions``, oldest first)."""


@dataclass(frozen=True, slots=True)
class StoredRevision:
    """One committed revision of an event: the stream's message ``seq`` and the document."""

    seq: int
    document: dict[str, Any]


RevisionListener = Callable[[StoredRevision], None]
"""Told of every revision once it is committed (on the event loop), e.g. the event stream."""


@dataclass(frozen=True, slots=True)
class StoredEmbedding:
    """One embedding: of an enrolled person (``person_id``) or of a sighting (``camera``)."""

    kind: str
    vector: Vector
    ts: float
    person_id: str | None = None
    person_name: str | None = None
    camera: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    name: str
    created: float
    embeddings: int

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "embeddings": self.embeddings,
            "created": self.created,
        }


class DuplicatePersonError(Exception):
    """A person with that name is already enrolled."""


class StorageError(Exception):
    """The data dir refused a read or write for a reason outside the add-on (disk, mount)."""

    code = "storage_unavailable"

    def __init__(self, message: str, data_dir: Path) -> None:
        super().__init__(message)
        self.data_dir = data_dir

    def as_issue(self) -> dict[str, Any]:
        """The /health issue that Home Assistant turns into a repair."""
        return {"code": self.code, "path": str(self.data_dir), "message": str(self)}


class StorageFullError(StorageError):
    """No space left in the data dir (ENOSPC, a quota, SQLITE_FULL)."""

    code = "storage_full"


class StorageUnavailableError(StorageError):
    """The data dir cannot be used: read-only, I/O error, not a directory, locked."""


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_NOT_A_DIR_ERRNOS = frozenset({errno.EEXIST, errno.ENOTDIR})  # mkdir/open on a file
_SQLITE_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_NOLFS,
    }
)
RECOVERED_FREE_BYTES = 1 << 20
"""Free space that must come back, above what was free at the failure, to clear storage_full."""


def storage_error(err: BaseException, data_dir: Path) -> StorageError | None:
    """Classify a failure of the disk under the store; ``None`` for anything else (a bug).

    SQLite reports a full disk (and its own ``max_page_count``) as SQLITE_FULL, and a read-only
    or failing disk as one of the I/O codes; the operating system reports ENOSPC/EDQUOT.
    """
    if isinstance(err, sqlite3.Error):
        code = getattr(err, "sqlite_errorcode", None)
        if code is None:
            return None
        primary = code & 0xFF  # extended codes keep the primary code in the low byte
        if primary == sqlite3.SQLITE_FULL:
            return StorageFullError(f"no space left in the data dir {data_dir} ({err})", data_dir)
        if primary in _SQLITE_UNAVAILABLE:
            message = f"the data dir {data_dir} cannot be used ({err})"
            return StorageUnavailableError(message, data_dir)
        return None
    if isinstance(err, OSError):
        return os_storage_error(err, data_dir)
    return None


def os_storage_error(err: OSError, data_dir: Path) -> StorageError:
    """An operating-system failure on the data dir: full for ENOSPC/EDQUOT, else unavailable."""
    reason = err.strerror or str(err)
    if err.errno in _NOT_A_DIR_ERRNOS:
        reason = "it is not a directory"
    if err.errno in _FULL_ERRNOS:
        return StorageFullError(f"no space left in the data dir {data_dir} ({reason})", data_dir)
    return StorageUnavailableError(f"the data dir {data_dir} cannot be used ({reason})", data_dir)


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        _add_missing_columns(conn)
    except BaseException:
        conn.close()
        raise
    return conn


_ADDED_COLUMNS = (("feedback", "appearance", "TEXT"),)
"""Columns added to a table after it first shipped: ``CREATE TABLE IF NOT EXISTS`` leaves an
existing table as it is, so a database written before them gains them here (NULL in old rows).
"""


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, column, kind in _ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


@contextlib.contextmanager
def _disk_errors(data_dir: Path) -> Iterator[None]:
    """Re-raise a failure of the disk as :class:`StorageError`; anything else as it is."""
    try:
        yield
    except (sqlite3.Error, OSError) as err:
        problem = storage_error(err, data_dir)
        if problem is None:
            raise
        raise problem from err


def check_storage(path: Path) -> None:
    """Open (creating) the database at ``path`` once, as serving will; raise StorageError.

    The command line calls this before it loads any model, so a data dir that is read-only,
    a file, or on a failing disk stops the start-up with one clear line instead of a traceback.
    """
    with _disk_errors(path.parent):
        _connect(path).close()


class EventStore:
    """Async facade over one SQLite database file."""

    def __init__(self, path: Path, *, max_age_days: float, max_events: int) -> None:
        self.path = path
        self.max_age_seconds = max_age_days * 86400
        self.max_events = max_events
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._conn: sqlite3.Connection | None = None
        self.problem: StorageError | None = None
        """The last failure of the disk, reported in /health until the store recovers."""
        self._free_at_failure = 0
        self._listeners: list[RevisionListener] = []

    def listen(self, listener: RevisionListener) -> None:
        """Call ``listener`` with each revision committed from now on (in commit order)."""
        self._listeners.append(listener)

    def _committed(self, revision: StoredRevision) -> None:
        for listener in self._listeners:
            listener(revision)

    @property
    def data_dir(self) -> Path:
        return self.path.parent

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        """Run ``fn`` on the store thread; turn disk failures into :class:`StorageError`.

        A successful write proves the disk works again and clears the recorded problem.
        """
        loop = asyncio.get_running_loop()
        try:
            with _disk_errors(self.data_dir):
                result = await loop.run_in_executor(self._executor, self._call, fn)
        except StorageError as problem:
            self._record(problem)
            raise
        if write and self.problem is not None:
            _LOGGER.warning("the data dir %s accepts writes again", self.data_dir)
            self.problem = None
        return result

    def _record(self, problem: StorageError) -> None:
        if self.problem is None or self.problem.code != problem.code:
            _LOGGER.error("event store: %s", problem)
        self.problem = problem
        self._free_at_failure = self._free_bytes() or 0

    def _free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.data_dir).free
        except OSError:
            return None

    def issues(self) -> list[dict[str, Any]]:
        """The storage problem for /health, if any; a full disk clears when space returns.

        The free-space check (one ``statvfs``) runs only while the disk is known full, so the
        repair in Home Assistant goes away once space is freed, even before the next event.
        """
        problem = self.problem
        if problem is None:
            return []
        if isinstance(problem, StorageFullError):
            free = self._free_bytes()
            if free is not None and free >= self._free_at_failure + RECOVERED_FREE_BYTES:
                _LOGGER.warning("the data dir %s has free space again", self.data_dir)
                self.problem = None
                return []
        return [problem.as_issue()]

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise RuntimeError("the event store is closed")
        return fn(self._conn)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        with _disk_errors(self.data_dir):
            self._conn = await loop.run_in_executor(self._executor, _connect, self.path)

    async def close(self) -> None:
        if self._conn is not None:
            conn = self._conn
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    # -- events ---------------------------------------------------------------------------

    async def add_event(
        self,
        document: dict[str, Any],
        snapshot: bytes | None,
        embeddings: Sequence[StoredEmbedding] = (),
    ) -> StoredRevision:
        """Commit the event (its first revision), its snapshot and its sightings' embeddings
        in one transaction; the revision with its stream ``seq``.

        Raises :class:`StorageError` when the disk refuses it: then nothing was stored. The
        retention trim that follows is best effort (a failure is only logged and reported).
        """
        ts = float(document["ts"])
        row = (
            document["id"],
            document["camera"],
            ts,
            LEVEL_RANK[document["risk_level"]],
            json.dumps(document, separators=(",", ":")),
            snapshot,
        )

        def write(conn: sqlite3.Connection) -> int:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT INTO events (id, camera, ts, level_rank, document, snapshot) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                )
                _insert_embeddings(conn, embeddings)
                return _insert_revision(conn, document, row[4])

        stored = StoredRevision(await self._run(write, write=True), document)
        self._committed(stored)
        try:
            await self._run(lambda conn: self._trim(conn, ts), write=True)
        except StorageError as err:
            _LOGGER.warning("retention trim skipped: %s", err)
        return stored

    async def add_revision(self, document: dict[str, Any]) -> StoredRevision | None:
        """Commit a newer revision of a stored event (the LLM's refinement): it becomes the
        event's document and joins its history. ``None`` when the event is gone (retention
        trimmed it meanwhile) or already has this revision (nothing is written then)."""
        text = json.dumps(document, separators=(",", ":"))

        def write(conn: sqlite3.Connection) -> int | None:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                updated = conn.execute(
                    "UPDATE events SET document = ?, level_rank = ? WHERE id = ?",
                    (text, LEVEL_RANK[document["risk_level"]], document["id"]),
                ).rowcount
                if not updated or _has_revision(conn, document["id"], document["revision"]):
                    conn.execute("ROLLBACK")
                    return None
                return _insert_revision(conn, document, text)

        seq = await self._run(write, write=True)
        if seq is None:
            return None
        stored = StoredRevision(seq, document)
        self._committed(stored)
        return stored

    async def revisions_after(self, seq: int, limit: int = 100) -> list[StoredRevision]:
        """Committed revisions with a stream ``seq`` above ``seq``, oldest first."""

        def read(conn: sqlite3.Connection) -> list[StoredRevision]:
            rows = conn.execute(
                "SELECT seq, document FROM revisions WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
            return [StoredRevision(r[0], json.loads(r[1])) for r in rows]

        return await self._run(read)

    async def last_seq(self) -> int:
        """The newest stream ``seq`` handed out (0 before the first), deleted rows included."""

        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'revisions'")
            found = row.fetchone()
            return int(found[0]) if found else 0

        return await self._run(read)

    async def pending_events(self) -> list[dict[str, Any]]:
        """Events whose newest revision still waits for the LLM (``llm_status: pending``)."""

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT document FROM events "
                "WHERE json_extract(document, '$.llm_status') = 'pending' ORDER BY ts"
            ).fetchall()
            return [json.loads(r[0]) for r in rows]

        return await self._run(read)

    def _trim(self, conn: sqlite3.Connection, now: float) -> None:
        with conn:
            cutoff = now - self.max_age_seconds
            conn.execute(
                "DELETE FROM revisions WHERE event_id IN (SELECT id FROM events WHERE ts < ?)",
                (cutoff,),
            )
            conn.execute("DELETE FROM events WHERE ts < ?", (cutoff,))
            conn.execute(
                "DELETE FROM revisions WHERE event_id IN "
                "(SELECT id FROM events ORDER BY ts DESC LIMIT -1 OFFSET ?)",
                (self.max_events,),
            )
            conn.execute(
                "DELETE FROM events WHERE id IN "
                "(SELECT id FROM events ORDER BY ts DESC LIMIT -1 OFFSET ?)",
                (self.max_events,),
            )
            conn.execute(
                "DELETE FROM embeddings WHERE person_id IS NULL AND ts < ?",
                (now - self.max_age_seconds,),
            )

    async def get_event(self, event_id: str) -> dict[str, Any] | None:
        """The event's newest revision, with its ``feedback`` when the user gave one and its
        stored history as ``revisions`` (oldest first; :data:`REVISION_FIELDS` of each)."""

        def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
            event = _read_event(conn, event_id)
            if event is None:
                return None
            rows = conn.execute(
                "SELECT document FROM revisions WHERE event_id = ? ORDER BY revision",
                (event_id,),
            ).fetchall()
            history = [json.loads(r[0]) for r in rows] or [event]  # stored before revisions
            event["revisions"] = [{key: doc.get(key) for key in REVISION_FIELDS} for doc in history]
            return event

        return await self._run(read)

    async def get_snapshot(self, event_id: str) -> bytes | None:
        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT snapshot FROM events WHERE id = ?", (event_id,)).fetchone()
            return None if row is None or row[0] is None else bytes(row[0])

        return await self._run(read)

    async def list_events(
        self,
        *,
        camera: str | None = None,
        since: float | None = None,
        min_level: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        clauses: list[str] = []
        params: list[object] = []
        if camera is not None:
            clauses.append("e.camera = ?")
            params.append(camera)
        if since is not None:
            clauses.append("e.ts >= ?")
            params.append(since)
        if min_level is not None:
            clauses.append("e.level_rank >= ?")
            params.append(LEVEL_RANK[min_level])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"{_EVENT_SELECT} {where} ORDER BY e.ts DESC, e.id DESC LIMIT ?"

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            return [_with_feedback(r) for r in conn.execute(sql, (*params, limit))]

        return await self._run(read)

    async def recent_events(self, camera: str, since: float) -> list[dict[str, Any]]:
        """This camera's events since ``since``, oldest first (dwell and loitering context)."""
        events = await self.list_events(camera=camera, since=since, limit=100)
        return list(reversed(events))

    # -- feedback -------------------------------------------------------------------------

    async def set_feedback(
        self, event_id: str, verdict: Verdict | None, note: str | None = None
    ) -> dict[str, Any] | None:
        """Record (replacing any earlier one) or, with ``verdict=None``, withdraw the user's
        verdict on an event; the event with its feedback, or ``None`` for an unknown event."""
        now = time.time()

        def write(conn: sqlite3.Connection) -> dict[str, Any] | None:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute(
                    "SELECT camera, ts, document FROM events WHERE id = ?", (event_id,)
                ).fetchone()
                if row is None:
                    return None
                if verdict is None:
                    conn.execute("DELETE FROM feedback WHERE event_id = ?", (event_id,))
                else:
                    document = json.loads(row[2])
                    names = signature(f["name"] for f in document["factors"])
                    looks = appearance(d["class"] for d in document.get("detections", ()))
                    conn.execute(
                        "INSERT OR REPLACE INTO feedback "
                        "(event_id, camera, verdict, ts, note, event_ts, factors, appearance) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            event_id,
                            row[0],
                            str(verdict),
                            now,
                            note,
                            row[1],
                            json.dumps(sorted(names)),
                            json.dumps(sorted(looks)),
                        ),
                    )
            return _read_event(conn, event_id)

        return await self._run(write, write=True)

    async def feedback_on(self, camera: str) -> list[FeedbackRecord]:
        """This camera's newest verdicts (at most :data:`MAX_FEEDBACK_PER_CAMERA`)."""

        def read(conn: sqlite3.Connection) -> list[FeedbackRecord]:
            rows = conn.execute(
                "SELECT verdict, event_ts, factors, appearance FROM feedback WHERE camera = ? "
                "ORDER BY ts DESC LIMIT ?",
                (camera, MAX_FEEDBACK_PER_CAMERA),
            ).fetchall()
            return [
                FeedbackRecord(
                    Verdict(r[0]),
                    r[1],
                    frozenset(json.loads(r[2])),
                    None if r[3] is None else frozenset(json.loads(r[3])),
                )
                for r in rows
            ]

        return await self._run(read)

    # -- people and embeddings ------------------------------------------------------------

    async def add_person(self, name: str, vectors: Sequence[tuple[str, Vector]]) -> Person:
        person_id = new_id()
        now = time.time()

        def write(conn: sqlite3.Connection) -> Person:
            try:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(
                        "INSERT INTO people (id, name, created) VALUES (?, ?, ?)",
                        (person_id, name, now),
                    )
                    _insert_embeddings(
                        conn,
                        [
                            StoredEmbedding(kind, vector, now, person_id=person_id)
                            for kind, vector in vectors
                        ],
                    )
            except sqlite3.IntegrityError:
                raise DuplicatePersonError(f"a person named {name!r} is already enrolled") from None
            return Person(person_id, name, now, len(vectors))

        return await self._run(write, write=True)

    async def list_people(self) -> list[Person]:
        def read(conn: sqlite3.Connection) -> list[Person]:
            rows = conn.execute(
                "SELECT p.id, p.name, p.created, COUNT(e.id) FROM people p "
                "LEFT JOIN embeddings e ON e.person_id = p.id GROUP BY p.id ORDER BY p.name"
            ).fetchall()
            return [Person(r[0], r[1], r[2], r[3]) for r in rows]

        return await self._run(read)

    async def delete_person(self, person_id: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            with conn:
                return conn.execute("DELETE FROM people WHERE id = ?", (person_id,)).rowcount > 0

        return await self._run(write, write=True)

    async def embeddings(self, kind: str, *, since: float | None = None) -> list[StoredEmbedding]:
        """Enrolled embeddings of ``kind`` plus sightings newer than ``since``."""

        def read(conn: sqlite3.Connection) -> list[StoredEmbedding]:
            rows = conn.execute(
                "SELECT e.kind, e.vector, e.ts, e.person_id, p.name, e.camera, e.event_id "
                "FROM embeddings e LEFT JOIN people p ON p.id = e.person_id "
                "WHERE e.kind = ? AND (e.person_id IS NOT NULL OR e.ts >= ?)",
                (kind, since if since is not None else 0.0),
            ).fetchall()
            return [
                StoredEmbedding(
                    r[0], np.frombuffer(r[1], dtype=np.float32), r[2], r[3], r[4], r[5], r[6]
                )
                for r in rows
            ]

        return await self._run(read)


_EVENT_SELECT = (
    "SELECT e.document, f.verdict, f.note, f.ts FROM events e "
    "LEFT JOIN feedback f ON f.event_id = e.id"
)


def _with_feedback(row: Sequence[Any]) -> dict[str, Any]:
    """An event document from an :data:`_EVENT_SELECT` row; ``feedback`` only when given."""
    document: dict[str, Any] = json.loads(row[0])
    if row[1] is not None:
        document["feedback"] = {"verdict": row[1], "note": row[2], "ts": row[3]}
    return document


def _read_event(conn: sqlite3.Connection, event_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"{_EVENT_SELECT} WHERE e.id = ?", (event_id,)).fetchone()
    return None if row is None else _with_feedback(row)


def _insert_revision(conn: sqlite3.Connection, document: dict[str, Any], text: str) -> int:
    """Add one revision row; its ``seq`` (the stream id) is SQLite's next AUTOINCREMENT."""
    cursor = conn.execute(
        "INSERT INTO revisions (event_id, revision, document) VALUES (?, ?, ?)",
        (document["id"], int(document.get("revision", 1)), text),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _has_revision(conn: sqlite3.Connection, event_id: str, revision: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM revisions WHERE event_id = ? AND revision = ?", (event_id, revision)
    ).fetchone()
    return row is not None


def _insert_embeddings(conn: sqlite3.Connection, embeddings: Sequence[StoredEmbedding]) -> None:
    conn.executemany(
        "INSERT INTO embeddings (kind, person_id, camera, event_id, ts, vector) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                e.kind,
                e.person_id,
                e.camera,
                e.event_id,
                e.ts,
                np.ascontiguousarray(e.vector, dtype=np.float32).tobytes(),
            )
            for e in embeddings
        ],
    )
