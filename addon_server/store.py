"""The event store: SQLite in WAL mode for events, their snapshots, people and embeddings.

An accepted event is committed (``synchronous=FULL``) before the API answers, so a crash or a
restart of the add-on never loses an event Home Assistant was told about. SQLite calls run on
one dedicated thread that owns the connection: the event loop never blocks on disk, and there
is exactly one writer. Retention trims by age and by count after inserts.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from addon_server.reasoning.levels import LEVEL_RANK

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
"""


def new_id(now: float | None = None) -> str:
    """A sortable id: milliseconds since the epoch in hex, then randomness."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis:012x}{secrets.token_hex(6)}"


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


class EventStore:
    """Async facade over one SQLite database file."""

    def __init__(self, path: Path, *, max_age_days: float, max_events: int) -> None:
        self.path = path
        self.max_age_seconds = max_age_days * 86400
        self.max_events = max_events
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise RuntimeError("the event store is closed")
        return fn(self._conn)

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(_SCHEMA)
            return conn

        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, connect)

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
    ) -> None:
        """Commit the event, its snapshot and its sightings' embeddings in one transaction."""
        ts = float(document["ts"])
        row = (
            document["id"],
            document["camera"],
            ts,
            LEVEL_RANK[document["risk_level"]],
            json.dumps(document, separators=(",", ":")),
            snapshot,
        )

        def write(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT INTO events (id, camera, ts, level_rank, document, snapshot) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                )
                _insert_embeddings(conn, embeddings)
            self._trim(conn, ts)

        await self._run(write)

    def _trim(self, conn: sqlite3.Connection, now: float) -> None:
        with conn:
            conn.execute("DELETE FROM events WHERE ts < ?", (now - self.max_age_seconds,))
            conn.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY ts DESC "
                "LIMIT -1 OFFSET ?)",
                (self.max_events,),
            )
            conn.execute(
                "DELETE FROM embeddings WHERE person_id IS NULL AND ts < ?",
                (now - self.max_age_seconds,),
            )

    async def get_event(self, event_id: str) -> dict[str, Any] | None:
        def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT document FROM events WHERE id = ?", (event_id,)).fetchone()
            return None if row is None else dict(json.loads(row[0]))

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
            clauses.append("camera = ?")
            params.append(camera)
        if since is not None:
            clauses.append("ts >= ?")
            params.append(since)
        if min_level is not None:
            clauses.append("level_rank >= ?")
            params.append(LEVEL_RANK[min_level])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT document FROM events {where} ORDER BY ts DESC, id DESC LIMIT ?"  # noqa: S608

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            return [json.loads(r[0]) for r in conn.execute(sql, (*params, limit))]

        return await self._run(read)

    async def recent_events(self, camera: str, since: float) -> list[dict[str, Any]]:
        """This camera's events since ``since``, oldest first (dwell and loitering context)."""
        events = await self.list_events(camera=camera, since=since, limit=100)
        return list(reversed(events))

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

        return await self._run(write)

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

        return await self._run(write)

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
