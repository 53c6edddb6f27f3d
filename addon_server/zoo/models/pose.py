"""Pose: MoveNet multipose (17 COCO keypoints for up to 6 people) and a posture per person.

The network takes the whole frame, RGB int32 NHWC, any size whose sides are multiples of 32; the
frame is resized so its longer side is :data:`INPUT_SIDE` (keypoints come back normalised to the
input, so they map straight back to the frame). Each person's posture comes from keypoint
geometry, rules a reader can check against a photo:

- **lying**: the torso (shoulder midpoint → hip midpoint) is closer to horizontal than
  :data:`LYING_ANGLE` degrees from vertical;
- **crouching**: upright torso, but the legs' vertical extent (hips → ankles, or knees when the
  ankles are not seen) is under :data:`CROUCH_RATIO` torso lengths — a standing adult's legs
  are about 1.5 torso lengths;
- **running**: upright with the ankles more than :data:`STRIDE_RATIO` torso lengths apart
  sideways (one still frame: a long stride, so it is a hint, not a measurement);
- **standing**: upright otherwise; **unknown** when the shoulders or hips are not seen.

Alerts: ``lying_down``, ``hands_raised`` (both wrists above the nose).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from addon_server.errors import ModelNotInstalledError
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.boxes import Box
from addon_server.zoo.models.onnx import session

POSE_FILE = "movenet-multipose.onnx"
INPUT_SIDE = 256
MIN_PERSON_SCORE = 0.2
MIN_KEYPOINT_SCORE = 0.2
LYING_ANGLE = 55.0
CROUCH_RATIO = 0.9
STRIDE_RATIO = 0.9
KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
_K = {name: index for index, name in enumerate(KEYPOINTS)}
POSTURE_NOTES = {
    "crouching": "potentially hiding",
    "lying": "possible fall or injury",
    "running": "moving fast",
}

Keypoint = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class PersonPose:
    """One person: keypoints (x, y, score) in frame pixels, box, score, posture, alerts."""

    keypoints: tuple[Keypoint, ...]
    bbox: Box
    score: float
    posture: str
    alerts: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "keypoints": {
                name: [round(x, 1), round(y, 1), round(s, 3)]
                for name, (x, y, s) in zip(KEYPOINTS, self.keypoints, strict=True)
            },
            "bbox": self.bbox.as_json(),
            "score": round(self.score, 3),
            "posture": self.posture,
            "alerts": list(self.alerts),
        }


@dataclass(frozen=True, slots=True)
class PoseResult:
    persons: tuple[PersonPose, ...]

    @property
    def postures(self) -> tuple[str, ...]:
        return tuple(p.posture for p in self.persons)

    def as_json(self) -> dict[str, Any]:
        return {
            "persons": [p.as_json() for p in self.persons],
            "postures": list(self.postures),
        }

    def context_lines(self) -> list[str]:
        lines = []
        for person in self.persons:
            if person.posture in POSTURE_NOTES:
                lines.append(f"Posture: {person.posture} ({POSTURE_NOTES[person.posture]})")
            if "hands_raised" in person.alerts:
                lines.append("Pose: hands raised")
        return lines


def _mid(a: Keypoint, b: Keypoint) -> tuple[float, float] | None:
    seen = [p for p in (a, b) if p[2] >= MIN_KEYPOINT_SCORE]
    if not seen:
        return None
    return sum(p[0] for p in seen) / len(seen), sum(p[1] for p in seen) / len(seen)


def posture_of(points: tuple[Keypoint, ...]) -> tuple[str, tuple[str, ...]]:
    """The posture and alerts of one person from 17 keypoints (see the module's rules)."""
    k = {name: points[i] for name, i in _K.items()}
    shoulders = _mid(k["left_shoulder"], k["right_shoulder"])
    hips = _mid(k["left_hip"], k["right_hip"])
    alerts: list[str] = []
    nose = k["nose"]
    wrists = (k["left_wrist"], k["right_wrist"])
    if nose[2] >= MIN_KEYPOINT_SCORE and all(
        w[2] >= MIN_KEYPOINT_SCORE and w[1] < nose[1] for w in wrists
    ):
        alerts.append("hands_raised")
    if shoulders is None or hips is None:
        return "unknown", tuple(alerts)
    dx, dy = hips[0] - shoulders[0], hips[1] - shoulders[1]
    torso = math.hypot(dx, dy)
    if torso < 1.0:
        return "unknown", tuple(alerts)
    angle = math.degrees(math.atan2(abs(dx), abs(dy)))  # 0 = vertical
    if angle > LYING_ANGLE:
        alerts.append("lying_down")
        return "lying", tuple(alerts)
    feet = _mid(k["left_ankle"], k["right_ankle"]) or _mid(k["left_knee"], k["right_knee"])
    if feet is not None and (feet[1] - hips[1]) / torso < CROUCH_RATIO:
        return "crouching", tuple(alerts)
    left, right = k["left_ankle"], k["right_ankle"]
    if (
        left[2] >= MIN_KEYPOINT_SCORE
        and right[2] >= MIN_KEYPOINT_SCORE
        and abs(left[0] - right[0]) / torso > STRIDE_RATIO
    ):
        return "running", tuple(alerts)
    return "standing", tuple(alerts)


def input_size(width: int, height: int) -> tuple[int, int]:
    """(W, H): the longer side INPUT_SIDE, the other scaled, both multiples of 32."""
    scale = INPUT_SIDE / max(width, height)
    return (
        max(32, math.ceil(width * scale / 32) * 32),
        max(32, math.ceil(height * scale / 32) * 32),
    )


class MoveNetPose:
    """MoveNet multipose on onnxruntime (its ``run`` is thread-safe; no lock needed)."""

    def __init__(self, context: LoadContext) -> None:
        path = context.path(POSE_FILE)
        if not path.is_file():
            raise ModelNotInstalledError(f"pose model not installed: {path}")
        self._session = session(path, context.device)
        self._input = self._session.get_inputs()[0].name

    def infer(self, frame: Frame) -> PoseResult:
        height, width = frame.pixels.shape[:2]
        size = input_size(width, height)
        rgb = cv2.resize(frame.pixels, size, interpolation=cv2.INTER_AREA)[:, :, ::-1]
        batch = np.ascontiguousarray(rgb[None], dtype=np.int32)
        (out,) = self._session.run(None, {self._input: batch})
        persons = []
        for row in np.asarray(out, dtype=np.float32)[0]:
            score = float(row[55])
            if score < MIN_PERSON_SCORE:
                continue
            points = tuple(
                (float(row[3 * i + 1]) * width, float(row[3 * i]) * height, float(row[3 * i + 2]))
                for i in range(17)
            )
            ymin, xmin, ymax, xmax = (float(v) for v in row[51:55])
            box = Box.from_corners(xmin * width, ymin * height, xmax * width, ymax * height,
                                   width, height)  # fmt: skip
            posture, alerts = posture_of(points)
            persons.append(PersonPose(points, box, score, posture, alerts))
        persons.sort(key=lambda p: -p.score)
        return PoseResult(tuple(persons))

    def warmup(self) -> None:
        self.infer(Frame(np.zeros((360, 640, 3), dtype=np.uint8)))

    def close(self) -> None:
        del self._session
