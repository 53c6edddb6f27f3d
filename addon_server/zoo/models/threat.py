"""Weapons: what the detector saw (COCO knife, scissors, baseball bat) and what an ImageNet
classifier sees on each person and on the regions where their hands are.

The COCO detector only names blades and bats; ImageNet knows revolvers, rifles, assault rifles,
cleavers and hatchets. Each person (the largest few) is classified whole and in two hand
regions — the left and right halves of the band from the shoulders to the hips, where a held
weapon is — and a weapon group above :data:`IMAGENET_MIN` on any of them is a threat. Measured
on the shared models' revolver crop: weapon classes 0.995; at most 0.03 on 13 non-weapon crops,
so the threshold sits far from both. A user's YOLO threat model is the ``threat_yolo`` row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from addon_server.detector.base import Detection
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models import imagenet_classes as classes
from addon_server.zoo.models.boxes import Box, crop_limit, largest
from addon_server.zoo.models.crops import region
from addon_server.zoo.models.imagenet import build_classifier, group_scores, top_label
from addon_server.zoo.registry import THREAT_CLASSES

IMAGENET_MIN = 0.5
DETECTOR_MIN = 0.3
PERSONS_CHECKED = 4
CROPS_PER_PERSON = 3
"""The person and their two :func:`hand_regions`."""


@dataclass(frozen=True, slots=True)
class Threat:
    class_name: str
    confidence: float
    source: str
    bbox: Box

    def as_json(self) -> dict[str, Any]:
        return {
            "class": self.class_name,
            "confidence": round(self.confidence, 3),
            "source": self.source,
            "bbox": self.bbox.as_json(),
        }


@dataclass(frozen=True, slots=True)
class ThreatResult:
    threats: tuple[Threat, ...]

    @property
    def max_confidence(self) -> float:
        return max((t.confidence for t in self.threats), default=0.0)

    def as_json(self) -> dict[str, Any]:
        return {
            "threats": [t.as_json() for t in self.threats],
            "max_confidence": round(self.max_confidence, 3),
        }

    def context_lines(self) -> list[str]:
        lines = []
        for t in sorted(self.threats, key=lambda t: -t.confidence):
            tag = "CRITICAL" if t.confidence >= 0.8 else "WARNING"
            lines.append(
                f"[{tag}] {t.class_name.upper()} DETECTED: confidence={round(t.confidence * 100)}%"
            )
        return lines


def hand_regions(person: Detection) -> list[Box]:
    """Left and right halves of the shoulder-to-hip band: where a held weapon is."""
    top = person.y + int(person.height * 0.2)
    height = max(1, int(person.height * 0.45))
    half = max(1, person.width // 2)
    widen = person.width // 6  # an arm held out reaches past the box's middle
    return [
        Box(max(0, person.x - widen), top, half + widen, height),
        Box(person.x + person.width - half, top, half + widen, height),
    ]


def _box(d: Detection) -> Box:
    return Box(d.x, d.y, d.width, d.height)


class ThreatDetector:
    """Weapons from the detector's classes plus ImageNet weapon classes on person crops."""

    def __init__(self, context: LoadContext) -> None:
        self._net = build_classifier(context)
        self._persons = min(PERSONS_CHECKED, crop_limit(context.options))

    def infer(self, frame: Frame) -> ThreatResult:
        found = [
            Threat(d.class_name, d.confidence, "detector", _box(d))
            for d in frame.of_class(*THREAT_CLASSES)
            if d.confidence >= DETECTOR_MIN
        ]
        height, width = frame.pixels.shape[:2]
        boxes: list[Box] = []
        for person in largest(frame.of_class("person"), self._persons):
            boxes.append(_box(person))
            for hand in hand_regions(person):
                clipped = Box.from_corners(
                    hand.x, hand.y, hand.x + hand.width, hand.y + hand.height, width, height
                )
                if clipped.area:
                    boxes.append(clipped)
        probs = self._net.run([region(frame.pixels, b) for b in boxes])
        best: dict[str, Threat] = {}
        for box, row in zip(boxes, probs, strict=True):
            for kind, p in group_scores(row, classes.WEAPONS).items():
                if p >= IMAGENET_MIN and (kind not in best or p > best[kind].confidence):
                    label = top_label(row, classes.WEAPONS[kind])
                    best[kind] = Threat(label, p, "imagenet", box)
        return ThreatResult(tuple(found + list(best.values())))

    def warmup(self) -> None:
        self._net.warmup(self._persons * CROPS_PER_PERSON)

    def close(self) -> None:
        self._net.close()
