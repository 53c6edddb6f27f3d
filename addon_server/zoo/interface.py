"""What every zoo model is, what it gets and what it gives back.

A zoo model is a small class with three methods — ``infer`` one :class:`Frame` into one
:class:`Enrichment`, ``warmup``, ``close`` — built by a loader from a :class:`LoadContext`. The
manager owns everything else (admission, memory accounting, eviction, idle unloads), so a model
family is one file in ``zoo/models/`` plus a row in ``zoo/registry.py``. ``infer`` is blocking
and runs in a worker thread; a model must be safe to call from several threads at once (hold a
lock inside where the runtime is not, as OpenCV's DNN and Ultralytics are not).

A model never fakes an output: when its weights are absent its loader raises
:class:`~addon_server.errors.ModelNotInstalledError` naming the path it looked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from addon_server.detector.base import Detection, clip_box
from addon_server.imaging import BGRImage, DecodedImage


class Priority(IntEnum):
    """How much a model matters when memory is short; lower values are evicted first.

    CRITICAL models (threat) are never evicted to make room for others.
    """

    LOW = 0
    MEDIUM = 1
    HIGH = 2
    CRITICAL = 3


class ModelState(StrEnum):
    """Where a zoo model is in its life; ``loading`` and ``unloading`` still hold their bytes."""

    NOT_INSTALLED = "not_installed"
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Frame:
    """One camera frame and what the detector found in it, in the frame's own pixels.

    ``history`` holds earlier frames of the same camera (oldest first) for models that look at
    several frames (actions); most models ignore it.
    """

    pixels: BGRImage
    detections: tuple[Detection, ...] = ()
    camera: str | None = None
    history: tuple[BGRImage, ...] = ()

    def of_class(self, *names: str) -> list[Detection]:
        wanted = set(names)
        return [d for d in self.detections if d.class_name in wanted]


@runtime_checkable
class Enrichment(Protocol):
    """A model's typed answer for one frame.

    ``as_json`` is what the API and the stored event carry; ``context_lines`` are the plain
    sentences the language model reads (e.g. ``"Posture: crouching (potentially hiding)"``).
    """

    def as_json(self) -> dict[str, Any]: ...

    def context_lines(self) -> list[str]: ...


class ZooModel(Protocol):
    """A loaded model, as a loader returns it."""

    def infer(self, frame: Frame) -> Enrichment:
        """Run on one frame (blocking; called from worker threads, several at once)."""
        ...

    def warmup(self) -> None:
        """One representative inference, so the measured memory includes the work buffers."""
        ...

    def close(self) -> None:
        """Drop every reference to weights and sessions (the manager frees the memory)."""
        ...


@dataclass(frozen=True, slots=True)
class LoadContext:
    """What a loader gets: where weights live, which device, and the spec's own options."""

    models_dir: Path
    device: str
    options: dict[str, Any] = field(default_factory=dict)

    def path(self, file: str) -> Path:
        """``file`` inside the models dir (an absolute ``file`` is used as it is)."""
        candidate = Path(file)
        return candidate if candidate.is_absolute() else self.models_dir / candidate


class Loader(Protocol):
    """Builds a :class:`ZooModel` (blocking; runs on the device's one loader thread)."""

    def __call__(self, context: LoadContext) -> ZooModel: ...


class ZooBusyError(Exception):
    """A model could not be admitted: the budget is held by models in use, or it never fits.

    ``reason`` is a short machine-readable cause (``deadline``, ``exceeds_budget``,
    ``over_budget_after_measure``, ``oom``) that events and the API carry.
    """

    def __init__(self, model: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.model = model
        self.reason = reason


class ModelLoadError(Exception):
    """A model's loader failed (a bad file, a missing dependency, out of memory twice)."""


def crop(pixels: BGRImage, detection: Detection, pad: float = 0.0) -> BGRImage:
    """The detection's box (grown by ``pad`` of its size on each side), clipped to the frame."""
    height, width = pixels.shape[:2]
    dx, dy = int(detection.width * pad), int(detection.height * pad)
    x1, y1 = max(0, detection.x - dx), max(0, detection.y - dy)
    x2 = min(width, detection.x + detection.width + dx)
    y2 = min(height, detection.y + detection.height + dy)
    return pixels[y1:y2, x1:x2]


def boxes_json(detections: Sequence[Detection]) -> list[dict[str, int]]:
    return [{"x": d.x, "y": d.y, "width": d.width, "height": d.height} for d in detections]


def in_pixels(detections: Sequence[Detection], image: DecodedImage) -> tuple[Detection, ...]:
    """Detections reported in the upload's pixels, moved onto ``image.pixels`` (a reduced decode).

    Order is kept (boxes that clip to nothing stay, zero-sized) so indices still match.
    """
    if not image.reduced:
        return tuple(detections)
    sx, sy = image.to_original()
    height, width = image.pixels.shape[:2]
    out = []
    for d in detections:
        x, y, w, h = clip_box(
            d.x / sx, d.y / sy, (d.x + d.width) / sx, (d.y + d.height) / sy, width, height
        )
        out.append(Detection(d.class_name, d.confidence, x, y, w, h))
    return tuple(out)
