"""Zoo results as the reasoning stage's evidence records (threats, postures, pets, vehicles).

The rules and the prompt read typed records (``reasoning/context.py``); each model family keeps
its own result type. This module is the one translation between them, by the typed fields the
families share (``threats``, ``persons``/``posture``, ``falls``, ``pets``, ``vehicles``,
``plates``), so a new family that reuses a field name is scored without touching the rules.
Records about one person or vehicle point at its detection (``object_index``) by box overlap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from addon_server.detector.base import Detection
from addon_server.reasoning.context import Animal, Attribute, Posture, Threat, VehicleKind
from addon_server.reasoning.context import Enrichment as Record
from addon_server.zoo.interface import Enrichment
from addon_server.zoo.models.boxes import Box, overlapping

GUNS = frozenset({"revolver", "rifle", "assault rifle", "pistol", "gun", "firearm", "handgun"})
"""ImageNet and YOLO weapon class names that the rules score as ``gun``."""


def threat_label(class_name: str) -> str:
    name = class_name.lower().replace("_", " ")
    if name in GUNS or "rifle" in name or "gun" in name or "pistol" in name:
        return "gun"
    if "knife" in name or name in ("cleaver", "letter opener", "scissors"):
        return "knife"
    if name in ("baseball bat", "bat", "hatchet", "axe"):
        return "weapon"
    return name


def _box(item: Any) -> Box | None:
    """A result's box, whichever form its family keeps it in (Box, mapping or tuple)."""
    box = getattr(item, "bbox", None)
    if box is None or isinstance(box, Box):
        return box
    if isinstance(box, Mapping):
        return Box(int(box["x"]), int(box["y"]), int(box["width"]), int(box["height"]))
    if hasattr(box, "x"):
        return Box(int(box.x), int(box.y), int(box.width), int(box.height))
    x, y, w, h = box
    return Box(int(x), int(y), int(w), int(h))


def _index(item: Any, detections: Sequence[Detection], classes: frozenset[str]) -> int | None:
    box = _box(item)
    return None if box is None else overlapping(box, detections, classes, above=0.3)


def _unit(value: Any) -> float:
    return min(1.0, max(0.0, float(value)))


_PERSON = frozenset({"person"})


def records(
    results: Mapping[str, Enrichment], detections: Sequence[Detection]
) -> dict[str, list[Record]]:
    """Evidence records per model name, for the reasoning stage's ``SceneContext``."""
    out: dict[str, list[Record]] = {}
    for model, result in results.items():
        found: list[Record] = []
        for threat in getattr(result, "threats", ()):
            found.append(
                Threat(
                    model=model,
                    confidence=_unit(threat.confidence),
                    label=threat_label(threat.class_name),
                    object_index=_index(threat, detections, _PERSON),
                )
            )
        for person in getattr(result, "persons", ()):
            posture = getattr(person, "posture", None)
            if posture and posture != "unknown":
                found.append(
                    Posture(
                        model=model,
                        confidence=_unit(getattr(person, "score", 1.0)),
                        posture=str(posture),
                        object_index=_index(person, detections, _PERSON),
                    )
                )
        for fall in getattr(result, "falls", ()):
            found.append(
                Posture(
                    model=model,
                    confidence=_unit(fall.confidence),
                    posture="fallen",
                    object_index=_index(fall, detections, _PERSON),
                )
            )
        for pet in getattr(result, "pets", ()):
            found.append(
                Animal(
                    model=model,
                    confidence=_unit(pet.confidence),
                    species=str(pet.species),
                    household=bool(pet.is_household_pet),
                    object_index=_index(pet, detections, frozenset()),
                )
            )
        for vehicle in getattr(result, "vehicles", ()):
            found.append(
                VehicleKind(
                    model=model,
                    confidence=_unit(vehicle.confidence),
                    vehicle_type=str(vehicle.vehicle_type),
                    object_index=_index(vehicle, detections, frozenset()),
                )
            )
        for plate in getattr(result, "plates", ()):
            found.append(
                Attribute(
                    model=model,
                    confidence=_unit(plate.confidence),
                    name="licence plate",
                    value=str(plate.text),
                )
            )
        if found:
            out[model] = found
    return out
