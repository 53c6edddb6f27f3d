"""Pets and vehicle types from one ImageNet classifier (EfficientNet-Lite0) on detector crops.

The detector says "cat" or "car"; ImageNet's 1000 classes say more: which breed, and whether
the "dog" at night is a fox or a coyote (a wild animal is not the household's pet, which the
rules treat differently), whether the "car" is a pickup or a van. Class probabilities are summed
per group (``imagenet_classes.py``); a wild group must win with at least
:data:`WILD_MIN` before an animal is called wild, so a blurry cat is not turned into a fox.
A cat or dog is named by ImageNet when its group reaches :data:`PET_MIN`, else by the detector
(label ``unsure``); a bird, horse, sheep or cow that ImageNet sees as neither a pet nor a wild
animal is not reported — a softmax always leaves some probability on the dog breeds, which
must never turn a horse into a household dog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from addon_server.detector.base import Detection
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models import imagenet_classes as classes
from addon_server.zoo.models.boxes import Box, crop_limit, largest
from addon_server.zoo.models.crops import Floats, OnnxCropNet, efficientnet_lite, region
from addon_server.zoo.registry import PETS

CLASSIFIER_FILE = "efficientnet-lite0.onnx"
ANIMAL_CLASSES = ("cat", "dog", "bird", "horse", "sheep", "cow", "bear")
VEHICLE_CLASSES = ("car", "truck", "bus", "motorcycle", "bicycle")
WILD_MIN = 0.3
PET_MIN = 0.3
TYPE_MIN = 0.15


def build_classifier(context: LoadContext) -> OnnxCropNet:
    """The classifier, with the class names read now (a load, not a first finding, pays)."""
    classes.names()
    return OnnxCropNet(
        context,
        CLASSIFIER_FILE,
        width=224,
        height=224,
        normalise=efficientnet_lite,
        what="ImageNet classifier (EfficientNet-Lite0)",
    )


def group_scores(probs: Floats, groups: dict[str, Any]) -> dict[str, float]:
    return {name: float(probs[list(indices)].sum()) for name, indices in groups.items()}


def top_label(probs: Floats, indices: Any) -> str:
    chosen = list(indices)
    return str(classes.names()[chosen[int(np.argmax(probs[chosen]))]])


@dataclass(frozen=True, slots=True)
class Pet:
    species: str
    label: str
    confidence: float
    is_household_pet: bool
    bbox: Box

    def as_json(self) -> dict[str, Any]:
        return {
            "species": self.species,
            "label": self.label,
            "confidence": round(self.confidence, 3),
            "is_household_pet": self.is_household_pet,
            "bbox": self.bbox.as_json(),
        }


@dataclass(frozen=True, slots=True)
class PetResult:
    pets: tuple[Pet, ...]

    def as_json(self) -> dict[str, Any]:
        return {"pets": [p.as_json() for p in self.pets]}

    def context_lines(self) -> list[str]:
        return [
            f"Pet: {p.species} ({'household pet' if p.is_household_pet else 'wild animal'}, "
            f"{p.label}, {round(p.confidence * 100)}%)"
            for p in self.pets
        ]


def _box(d: Any) -> Box:
    return Box(d.x, d.y, d.width, d.height)


class PetClassifier:
    """Cat or dog (and breed), or a wild animal, for each animal the detector found."""

    def __init__(self, context: LoadContext) -> None:
        self._net = build_classifier(context)
        self._limit = crop_limit(context.options)

    def infer(self, frame: Frame) -> PetResult:
        animals = largest(frame.of_class(*ANIMAL_CLASSES), self._limit)
        probs = self._net.run([region(frame.pixels, _box(d)) for d in animals])
        pets = []
        for detection, row in zip(animals, probs, strict=True):
            pet = self._name(detection, row)
            if pet is not None:
                pets.append(pet)
        return PetResult(tuple(pets))

    @staticmethod
    def _name(detection: Detection, row: Floats) -> Pet | None:
        wild = group_scores(row, classes.WILD_ANIMALS)
        wild_name, wild_p = max(wild.items(), key=lambda kv: kv[1])
        pet_groups = {"cat": classes.CATS, "dog": classes.DOGS}
        pet_p = group_scores(row, pet_groups)
        if wild_p >= WILD_MIN and wild_p > max(pet_p.values()):
            label = top_label(row, classes.WILD_ANIMALS[wild_name])
            return Pet(wild_name, label, wild_p, False, _box(detection))
        species, p = max(pet_p.items(), key=lambda kv: kv[1])
        if p >= PET_MIN:
            return Pet(species, top_label(row, pet_groups[species]), p, True, _box(detection))
        if detection.class_name in PETS:  # ImageNet is unsure: the detector's word stands
            name = detection.class_name
            return Pet(name, "unsure", pet_p[name], True, _box(detection))
        return None

    def warmup(self) -> None:
        self._net.warmup(self._limit)

    def close(self) -> None:
        self._net.close()


@dataclass(frozen=True, slots=True)
class Vehicle:
    vehicle_type: str
    label: str
    confidence: float
    bbox: Box

    def as_json(self) -> dict[str, Any]:
        return {
            "vehicle_type": self.vehicle_type,
            "label": self.label,
            "confidence": round(self.confidence, 3),
            "bbox": self.bbox.as_json(),
        }


@dataclass(frozen=True, slots=True)
class VehicleResult:
    vehicles: tuple[Vehicle, ...]

    def as_json(self) -> dict[str, Any]:
        return {"vehicles": [v.as_json() for v in self.vehicles]}

    def context_lines(self) -> list[str]:
        return [
            f"Vehicle: {v.vehicle_type} ({v.label}, {round(v.confidence * 100)}%)"
            for v in self.vehicles
        ]


class VehicleClassifier:
    """The type of each vehicle the detector found (car, pickup, van, truck, bus, …)."""

    def __init__(self, context: LoadContext) -> None:
        self._net = build_classifier(context)
        self._limit = crop_limit(context.options)

    def infer(self, frame: Frame) -> VehicleResult:
        found = largest(frame.of_class(*VEHICLE_CLASSES), self._limit)
        probs = self._net.run([region(frame.pixels, _box(d)) for d in found])
        vehicles = []
        for detection, row in zip(found, probs, strict=True):
            scores = group_scores(row, classes.VEHICLE_TYPES)
            kind, p = max(scores.items(), key=lambda kv: kv[1])
            if p < TYPE_MIN:
                vehicles.append(Vehicle("other", "unsure", p, _box(detection)))
                continue
            vehicles.append(
                Vehicle(kind, top_label(row, classes.VEHICLE_TYPES[kind]), p, _box(detection))
            )
        return VehicleResult(tuple(vehicles))

    def warmup(self) -> None:
        self._net.warmup(self._limit)

    def close(self) -> None:
        self._net.close()
