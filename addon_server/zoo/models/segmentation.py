"""Person masks from MediaPipe Meet (``meet.onnx``), run on person crops only.

Meet assumes someone is in the picture: on a whole cat photo it marks 71–91 % of the pixels as
"person" (shared models README). So it never runs on a frame, only inside the detector's
person boxes, and what it answers is how much of each box is body: a low fraction is a person
mostly hidden (behind a car, a fence, another person) or a doubtful detection.

Each crop (padded 5 %) is letterboxed into Meet's 256x144 landscape input on black rather than
stretched: on the test photos the tall crops stretched sideways lost body pixels (zidane.jpg
0.61/0.52 of the boxes marked, letterboxed 0.71/0.56; the clearly visible man in bus.jpg 0.55 vs
0.83). Channel 1 of the two-class softmax is "person"; a pixel counts above 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from addon_server.detector.base import Detection
from addon_server.errors import ModelNotInstalledError
from addon_server.imaging import BGRImage
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.boxes import Box, crop_limit, largest, letterbox, padded_region
from addon_server.zoo.models.onnx import session

WIDTH, HEIGHT = 256, 144
PARTLY_VISIBLE_BELOW = 0.3
"""Below this share of its box marked as body, a person gets a context line."""


@dataclass(frozen=True, slots=True)
class PersonMask:
    """The mask summary of one person box."""

    bbox: Box
    person_fraction: float
    """Share of the person box's pixels marked as person."""
    mask_bbox: Box | None
    """The marked pixels' bounding box in frame pixels (None when nothing is marked)."""
    thirds: tuple[float, float, float]
    """Share marked in the box's top, middle and bottom thirds (head, torso, legs)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "bbox": self.bbox.as_json(),
            "person_fraction": round(self.person_fraction, 3),
            "mask_bbox": None if self.mask_bbox is None else self.mask_bbox.as_json(),
            "thirds": [round(t, 3) for t in self.thirds],
        }


@dataclass(frozen=True, slots=True)
class SegmentationResult:
    persons: tuple[PersonMask, ...]

    def as_json(self) -> dict[str, Any]:
        return {"persons": [p.as_json() for p in self.persons]}

    def context_lines(self) -> list[str]:
        return [
            f"Person partly visible: only {p.person_fraction:.0%} of the person box is body "
            "(hidden behind something, or a doubtful detection)"
            for p in self.persons
            if p.person_fraction < PARTLY_VISIBLE_BELOW
        ]


class PersonSegmenter:
    """Mask summaries of the frame's largest person boxes."""

    def __init__(self, context: LoadContext) -> None:
        path = context.path(str(context.options.get("file", "meet.onnx")))
        if not path.is_file():
            raise ModelNotInstalledError(f"person segmentation model (Meet) not installed: {path}")
        self.threshold = float(context.options.get("threshold", 0.5))
        self.max_crops = crop_limit(context.options)
        self._session = session(path, context.device)

    def infer(self, frame: Frame) -> SegmentationResult:
        persons = largest(frame.of_class("person"), self.max_crops)
        return SegmentationResult(tuple(self.segment(frame.pixels, p) for p in persons))

    def probabilities(self, crop: BGRImage) -> np.ndarray:
        """Meet's person probability for each pixel of ``crop``, at the letterboxed size."""
        fitted = letterbox(crop, WIDTH, HEIGHT, fill=0)
        batch = np.ascontiguousarray(fitted.canvas[None, ..., ::-1], dtype=np.float32) / 255.0
        (logits,) = self._session.run(["segment:0"], {"input_1:0": batch})
        top, left = fitted.top, fitted.left
        region = logits[0, top : top + fitted.inner_height, left : left + fitted.inner_width]
        region = region.astype(np.float64)
        # softmax over the two classes = sigmoid of the difference
        return np.asarray(1.0 / (1.0 + np.exp(region[..., 0] - region[..., 1])))

    def segment(self, pixels: BGRImage, person: Detection) -> PersonMask:
        height, width = pixels.shape[:2]
        x1, y1, x2, y2 = padded_region(person, 0.05, 0.05, width, height)
        bbox = Box.from_corners(person.x, person.y, person.x + person.width,
                                person.y + person.height, width, height)  # fmt: skip
        if x2 - x1 < 2 or y2 - y1 < 2 or bbox.area == 0:
            return PersonMask(bbox, 0.0, None, (0.0, 0.0, 0.0))
        marked = self.probabilities(pixels[y1:y2, x1:x2]) > self.threshold
        # The box inside the (padded) crop, in mask cells.
        sy, sx = marked.shape[0] / (y2 - y1), marked.shape[1] / (x2 - x1)
        r1, r2 = int((bbox.y - y1) * sy), max(int((bbox.y + bbox.height - y1) * sy), 1)
        c1, c2 = int((bbox.x - x1) * sx), max(int((bbox.x + bbox.width - x1) * sx), 1)
        inside = marked[r1:r2, c1:c2]
        fraction = float(inside.mean()) if inside.size else 0.0
        thirds = tuple(
            float(part.mean()) if part.size else 0.0 for part in np.array_split(inside, 3, axis=0)
        )
        rows, cols = np.nonzero(marked)
        mask_bbox = None
        if rows.size:
            mask_bbox = Box.from_corners(
                x1 + cols.min() / sx,
                y1 + rows.min() / sy,
                x1 + (cols.max() + 1) / sx,
                y1 + (rows.max() + 1) / sy,
                width,
                height,
            )
        return PersonMask(bbox, fraction, mask_bbox, (thirds[0], thirds[1], thirds[2]))

    def warmup(self) -> None:
        blank = np.zeros((360, 640, 3), dtype=np.uint8)
        self.segment(blank, Detection("person", 1.0, 200, 40, 120, 300))

    def close(self) -> None:
        del self._session
