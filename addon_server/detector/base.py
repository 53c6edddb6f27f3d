"""The detector interface every backend implements, and the typed results it produces.

Backends return every box above a low floor for every class they know; the per-request choice
of classes and thresholds is applied afterwards by :func:`select`, so one batched forward pass
can serve callers that asked for different filters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from addon_server.imaging import BGRImage

COCO_ALIASES = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "tvmonitor": "tv",
    "diningtable": "dining table",
    "pottedplant": "potted plant",
}
"""Darknet's coco.names uses VOC-era spellings; the API speaks one vocabulary (Ultralytics')."""


def canonical_class(name: str) -> str:
    return COCO_ALIASES.get(name, name)


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object, with its box in pixels of the original image."""

    class_name: str
    confidence: float
    x: int
    y: int
    width: int
    height: int

    def as_json(self) -> dict[str, Any]:
        return {
            "class": self.class_name,
            "confidence": round(self.confidence, 4),
            "bbox": {"x": self.x, "y": self.y, "width": self.width, "height": self.height},
        }


@dataclass(frozen=True, slots=True)
class DetectionResult:
    """What the detect stage hands to the next stage (and to /v1/detect)."""

    detections: tuple[Detection, ...]
    width: int
    height: int
    inference_time_ms: float
    model: str
    batch_size: int
    missing_stages: tuple[str, ...] = ()
    """Stages that did not answer for this image (a fallback model found the boxes)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "detections": [d.as_json() for d in self.detections],
            "image": {"width": self.width, "height": self.height},
            "inference_time_ms": round(self.inference_time_ms, 2),
            "model": self.model,
            # Only when a stand-in answered (``ray.detector_fallback``): the caller must know.
            **(
                {"degraded": True, "missing_stages": list(self.missing_stages)}
                if self.missing_stages
                else {}
            ),
        }


class FallbackDetections(list[Detection]):
    """One image's detections found by a stand-in model because a stage did not answer.

    A backend returns it in place of a plain list (``ray.detector_fallback``): it travels
    through the batcher unchanged, so each analysis knows it was degraded, by which model and
    which stage was missing — per request, not guessed from a global state.
    """

    def __init__(
        self, found: Iterable[Detection], *, model: str, missing_stages: tuple[str, ...]
    ) -> None:
        super().__init__(found)
        self.model = model
        self.missing_stages = missing_stages


class Detector(Protocol):
    """A loaded object detector. ``detect_batch`` is blocking and runs off the event loop."""

    name: str
    backend: str
    device: str
    class_names: tuple[str, ...]

    def detect_batch(self, images: Sequence[BGRImage]) -> list[list[Detection]]:
        """Detect objects in each image; one list per image, in input order."""
        ...

    def memory_bytes(self) -> int:
        """Memory the loaded model holds on its device, for the budget ledger."""
        ...

    def close(self) -> None:
        """Release the model."""
        ...


@dataclass(frozen=True, slots=True)
class Selection:
    """Which classes a caller wants and the confidence each must reach."""

    classes: frozenset[str]
    default_threshold: float
    class_thresholds: Mapping[str, float]
    override: float | None = None

    def threshold(self, class_name: str) -> float:
        if self.override is not None:
            return self.override
        return self.class_thresholds.get(class_name, self.default_threshold)


def select(detections: Iterable[Detection], selection: Selection) -> tuple[Detection, ...]:
    """Keep the detections of the selected classes above their thresholds, best first."""
    kept = [
        d
        for d in detections
        if d.class_name in selection.classes and d.confidence >= selection.threshold(d.class_name)
    ]
    kept.sort(key=lambda d: d.confidence, reverse=True)
    return tuple(kept)


def clip_box(
    x1: float, y1: float, x2: float, y2: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """Clip corner coordinates to the image and return integer x, y, width, height."""
    left = round(min(max(x1, 0.0), width))
    top = round(min(max(y1, 0.0), height))
    right = round(min(max(x2, 0.0), width))
    bottom = round(min(max(y2, 0.0), height))
    return left, top, max(0, right - left), max(0, bottom - top)
