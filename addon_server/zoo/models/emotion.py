"""Seven facial expressions per face from a mini-Xception trained on FER2013 (``emotion.onnx``).

Preprocessing follows the shared models README: the square face crop reduced to 64x64, grey
as 0.2989 R + 0.587 G + 0.114 B of RGB/255, then mapped to −1…1. FER2013 is posed, frontal,
close-up faces; on a camera's small or turned faces the answer is weak, so a face whose best
class is below ``min_confidence`` (default 0.5) is reported as ``uncertain`` and gets no line
for the language model. Faces come from :class:`~addon_server.zoo.models.faces.FaceLocator`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.boxes import Box
from addon_server.zoo.models.faces import FaceCropModel

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
_GREY = np.array([0.2989, 0.587, 0.114], dtype=np.float32)  # R, G, B


@dataclass(frozen=True, slots=True)
class FaceEmotion:
    bbox: Box
    emotion: str
    """The most probable expression, or ``uncertain`` below the confidence floor."""
    confidence: float
    scores: tuple[float, ...]
    """One probability per :data:`EMOTIONS` entry."""

    def as_json(self) -> dict[str, Any]:
        return {
            "bbox": self.bbox.as_json(),
            "emotion": self.emotion,
            "confidence": round(self.confidence, 3),
            "scores": {name: round(s, 3) for name, s in zip(EMOTIONS, self.scores, strict=True)},
        }


@dataclass(frozen=True, slots=True)
class EmotionResult:
    faces: tuple[FaceEmotion, ...]
    face_source: str

    @property
    def emotions(self) -> tuple[str, ...]:
        return tuple(f.emotion for f in self.faces)

    def as_json(self) -> dict[str, Any]:
        return {"faces": [f.as_json() for f in self.faces], "face_source": self.face_source}

    def context_lines(self) -> list[str]:
        return [
            f"Facial expression: {f.emotion} ({f.confidence:.0%})"
            for f in self.faces
            if f.emotion != "uncertain"
        ]


class EmotionClassifier(FaceCropModel):
    """The expression of each face in a frame (the ``max_crops`` largest)."""

    default_file = "emotion.onnx"
    title = "emotion model"
    size = 64

    def __init__(self, context: LoadContext) -> None:
        super().__init__(context)
        self.min_confidence = float(context.options.get("min_confidence", 0.5))

    def infer(self, frame: Frame) -> EmotionResult:
        return EmotionResult(self.classify(frame, self._faces.boxes(frame)), self.face_source)

    def classify(self, frame: Frame, boxes: Sequence[Box]) -> tuple[FaceEmotion, ...]:
        if not boxes:
            return ()
        grey = (self.face_crops(frame, boxes) @ _GREY - 0.5) * 2.0
        (probabilities,) = self._session.run(
            ["Identity:0"], {"input_1:0": np.ascontiguousarray(grey[..., None], np.float32)}
        )
        faces = []
        for box, p in zip(boxes, probabilities, strict=True):
            best = int(np.argmax(p))
            confidence = float(p[best])
            label = EMOTIONS[best] if confidence >= self.min_confidence else "uncertain"
            faces.append(FaceEmotion(box, label, confidence, tuple(float(v) for v in p)))
        return tuple(faces)
