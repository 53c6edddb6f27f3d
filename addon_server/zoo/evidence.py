"""Zoo results as the reasoning stage's evidence records (threats, postures, pets, vehicles).

The rules and the prompt read typed records (``reasoning/context.py``); each model family keeps
its own result type. This module is the one translation between them, and it reads each result's
JSON document (``as_json()``), never its Python type: a model run in this process and the same
model's answer from the Ray cluster (``ray_serve.client.RemoteEnrichment``, that JSON and no
more) give equal records. It goes by the field names the families' documents share
(``threats[]`` with ``class``, ``persons[]`` with ``posture``, ``falls[]``, ``pets[]``,
``vehicles[]`` with ``vehicle_type`` or a segmenter's ``class``, ``plates[]``), so a new family
that reuses a field name is scored without touching the rules. Records about one person or
vehicle point at its detection (``object_index``) by box overlap.
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


def _items(document: Mapping[str, Any], field: str) -> list[Mapping[str, Any]]:
    """The objects listed under ``field`` (a family's ``postures`` strings are not records)."""
    found = document.get(field)
    if not isinstance(found, list | tuple):
        return []
    return [item for item in found if isinstance(item, Mapping)]


def _box(item: Mapping[str, Any]) -> Box | None:
    box = item.get("bbox")
    return Box.from_json(box) if isinstance(box, Mapping) else None


def _index(
    item: Mapping[str, Any], detections: Sequence[Detection], classes: frozenset[str]
) -> int | None:
    box = _box(item)
    return None if box is None else overlapping(box, detections, classes, above=0.3)


def _unit(value: Any) -> float:
    return min(1.0, max(0.0, float(value)))


_PERSON = frozenset({"person"})


def records(
    results: Mapping[str, Enrichment], detections: Sequence[Detection]
) -> dict[str, list[Record]]:
    """Evidence records per model name, for the reasoning stage's ``SceneContext``.

    Each result is read through its JSON document only, so a typed result and the cluster's
    copy of the same document give equal records."""
    out: dict[str, list[Record]] = {}
    for model, result in results.items():
        document = result.as_json()
        found: list[Record] = []
        for threat in _items(document, "threats"):
            found.append(
                Threat(
                    model=model,
                    confidence=_unit(threat["confidence"]),
                    label=threat_label(str(threat["class"])),
                    object_index=_index(threat, detections, _PERSON),
                )
            )
        for person in _items(document, "persons"):
            posture = person.get("posture")
            if posture and posture != "unknown":
                found.append(
                    Posture(
                        model=model,
                        confidence=_unit(person.get("score", 1.0)),
                        posture=str(posture),
                        object_index=_index(person, detections, _PERSON),
                    )
                )
        for fall in _items(document, "falls"):
            found.append(
                Posture(
                    model=model,
                    confidence=_unit(fall["confidence"]),
                    posture="fallen",
                    object_index=_index(fall, detections, _PERSON),
                )
            )
        for pet in _items(document, "pets"):
            found.append(
                Animal(
                    model=model,
                    confidence=_unit(pet["confidence"]),
                    species=str(pet["species"]),
                    household=bool(pet["is_household_pet"]),
                    object_index=_index(pet, detections, frozenset()),
                )
            )
        for vehicle in _items(document, "vehicles"):
            # A classifier names the type (``vehicle_type``); a segmenter its class (``class``).
            kind = vehicle.get("vehicle_type") or vehicle.get("class")
            if kind:
                found.append(
                    VehicleKind(
                        model=model,
                        confidence=_unit(vehicle["confidence"]),
                        vehicle_type=str(kind),
                        object_index=_index(vehicle, detections, frozenset()),
                    )
                )
        for plate in _items(document, "plates"):
            found.append(
                Attribute(
                    model=model,
                    confidence=_unit(plate["confidence"]),
                    name="licence plate",
                    value=str(plate["text"] or "unreadable"),  # the OCR read nothing: None
                )
            )
        if found:
            out[model] = found
    return out
