"""One interface for every model the add-on serves, so /health, /v1/models, metrics and the
device budget read one list.

The detector, the face embedder, the LLM server and each zoo model implement
:class:`ServedModel`: ``info`` (what /v1/models shows: state, device, priority, measured
bytes), ``load`` and ``unload``. Each kind keeps its own typed inference call (``detect``,
``embed``, ``assess``, the zoo's ``run``), because their inputs and outputs differ; what they
share is the life cycle and the memory figure, and that is what this list is for. Memory is
measured (``zoo/memory.py``), never a file size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class NotUnloadableError(Exception):
    """The model stays loaded while the add-on runs (the detector, the LLM server)."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A served model's entry in /v1/models and /health."""

    name: str
    kind: str
    backend: str
    device: str
    state: str
    installed: bool
    measured_bytes: int | None = None
    error: str | None = None
    priority: str | None = None
    category: str | None = None
    estimated_bytes: int | None = None
    accounted_bytes: int = 0
    refcount: int = 0
    pinned: bool = False
    unloadable: bool = True
    unload_pending: bool = False
    triton: dict[str, Any] | None = None
    """The Triton server's health, metadata and statistics, for a model served there."""
    registry: dict[str, Any] | None = None
    """The MLflow registry version it came from, for weights named ``models:/…``."""

    @property
    def loaded(self) -> bool:
        return self.state == "loaded"

    def as_json(self) -> dict[str, Any]:
        on_gpu = self.device.startswith("cuda")
        return {
            "name": self.name,
            "kind": self.kind,
            "backend": self.backend,
            "device": self.device,
            "state": self.state,
            "loaded": self.loaded,
            "installed": self.installed,
            "vram_bytes": (self.measured_bytes or 0) if on_gpu and self.loaded else 0,
            "measured_bytes": self.measured_bytes,
            "estimated_bytes": self.estimated_bytes,
            "accounted_bytes": self.accounted_bytes,
            "priority": self.priority,
            "category": self.category,
            "refcount": self.refcount,
            "pinned": self.pinned,
            "unloadable": self.unloadable,
            "unload_pending": self.unload_pending,
            "error": self.error,
            **({"triton": self.triton} if self.triton is not None else {}),
            **({"registry": self.registry} if self.registry is not None else {}),
        }


class ServedModel(Protocol):
    """The life cycle and memory figure every served model shares."""

    @property
    def name(self) -> str: ...

    def info(self) -> ModelInfo: ...

    async def load(self, *, pin: bool | None = None) -> None:
        """Load (blocking work off the loop); raises ``ModelNotInstalledError`` when absent."""
        ...

    async def unload(self) -> None:
        """Give the memory back; raises :class:`NotUnloadableError` where that is refused."""
        ...
