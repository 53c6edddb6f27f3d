"""Boxes in a frame's pixels and the geometry around them, shared by the crop-model families.

Models decode boxes as float corners in some resized or cropped input; :meth:`Box.from_corners`
is the one place they are rounded, clipped to the frame and turned into the
``{"x", "y", "width", "height"}`` shape the detector's boxes already have in JSON.
:func:`padded_region` is the crop a model searches around a detection, :func:`letterbox` the
aspect-preserving fit into a fixed network input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from addon_server.detector.base import Detection
from addon_server.imaging import BGRImage

MAX_CROPS = 8
"""Detections per frame a crop model looks at unless the zoo's ``max_crops`` option says."""


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in a frame's pixels."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def from_corners(
        cls, x1: float, y1: float, x2: float, y2: float, frame_width: int, frame_height: int
    ) -> Box:
        """The box with these corners, rounded and clipped to a ``frame_width``x``frame_height``."""
        left = min(max(round(x1), 0), frame_width)
        top = min(max(round(y1), 0), frame_height)
        right = min(max(round(x2), left), frame_width)
        bottom = min(max(round(y2), top), frame_height)
        return cls(left, top, right - left, bottom - top)

    @property
    def area(self) -> int:
        return self.width * self.height

    def iou(self, other: Box) -> float:
        """Intersection over union (0 when either box is empty)."""
        width = min(self.x + self.width, other.x + other.width) - max(self.x, other.x)
        height = min(self.y + self.height, other.y + other.height) - max(self.y, other.y)
        inter = max(0, width) * max(0, height)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def as_json(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}

    @classmethod
    def from_json(cls, box: Mapping[str, Any]) -> Box:
        """The box :meth:`as_json` wrote (a result's document read back, e.g. from the cluster)."""
        return cls(int(box["x"]), int(box["y"]), int(box["width"]), int(box["height"]))


def overlapping(
    box: Box, detections: Sequence[Detection], classes: frozenset[str], above: float
) -> int | None:
    """The index of the detection (of ``classes``, or any when empty) whose box overlaps
    ``box`` most, if that overlap (IoU) is more than ``above``: which detection a model's
    result is about."""
    best, best_iou = None, above
    for index, detection in enumerate(detections):
        if classes and detection.class_name not in classes:
            continue
        overlap = box.iou(Box(detection.x, detection.y, detection.width, detection.height))
        if overlap > best_iou:
            best, best_iou = index, overlap
    return best


def crop_limit(options: Mapping[str, Any]) -> int:
    """The zoo's ``max_crops`` (the service passes it to every loader), else :data:`MAX_CROPS`."""
    return max(1, int(options.get("max_crops", MAX_CROPS)))


def largest(detections: Sequence[Detection], limit: int) -> list[Detection]:
    """The ``limit`` largest detections by area: a crop model's work per frame stays bounded."""
    return sorted(detections, key=lambda d: d.width * d.height, reverse=True)[:limit]


def padded_region(
    detection: Detection | Box, pad_x: float, pad_y: float, frame_width: int, frame_height: int
) -> tuple[int, int, int, int]:
    """The box grown by ``pad_x``/``pad_y`` of its size per side, as clipped corners."""
    dx, dy = int(detection.width * pad_x), int(detection.height * pad_y)
    return (
        max(0, detection.x - dx),
        max(0, detection.y - dy),
        min(frame_width, detection.x + detection.width + dx),
        min(frame_height, detection.y + detection.height + dy),
    )


@dataclass(frozen=True, slots=True)
class Letterbox:
    """An image fitted into a ``width``x``height`` canvas: where it sits and at what scale."""

    canvas: BGRImage
    scale: float
    left: int
    top: int
    inner_width: int
    inner_height: int


def letterbox(image: BGRImage, width: int, height: int, fill: int) -> Letterbox:
    """``image`` scaled to fit ``width``x``height`` without distortion, centred on ``fill``."""
    rows, cols = image.shape[:2]
    scale = min(width / cols, height / rows)
    inner_w, inner_h = max(1, round(cols * scale)), max(1, round(rows * scale))
    left, top = (width - inner_w) // 2, (height - inner_h) // 2
    canvas = np.full((height, width, 3), fill, dtype=np.uint8)
    shrink = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR  # AREA enlarges blockily
    canvas[top : top + inner_h, left : left + inner_w] = cv2.resize(
        image, (inner_w, inner_h), interpolation=shrink
    )
    return Letterbox(canvas, scale, left, top, inner_w, inner_h)
