"""Boxes in a frame's pixels, shared by the face, plate and fall families.

Models decode boxes as float corners in some resized or cropped input; :meth:`Box.from_corners`
is the one place they are rounded, clipped to the frame and turned into the
``{"x", "y", "width", "height"}`` shape the detector's boxes already have in JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from addon_server.detector.base import Detection


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


def largest(detections: Sequence[Detection], limit: int) -> list[Detection]:
    """The ``limit`` largest detections by area: a crop model's work per frame stays bounded."""
    return sorted(detections, key=lambda d: d.width * d.height, reverse=True)[:limit]
