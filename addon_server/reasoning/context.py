"""The scene that the analyze pipeline hands to risk reasoning.

Everything the rules and the LLM judge is in one frozen value, built by the earlier stages
(detector, zoo enrichments, re-ID, the event store's recent history) and never reaching back into
them: reasoning works on data, so it can be tested with literal scenes and never imports torch,
HTTP or image code.

Enrichments are open-ended on purpose. The model zoo will add models over time (weapon, posture,
fire, face attributes, ...); each one yields typed records that subclass :class:`Enrichment`, keyed
by the model that produced them. The rule engine scores the record types it knows
(:class:`Threat`, :class:`Posture`) and every record, known or not, can describe itself as a line
for the LLM prompt, so a new zoo model is visible to the LLM before any rule is written for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

__all__ = [
    "ALARM_STATES",
    "ANIMAL_CLASSES",
    "MATCHED_BY",
    "PERSON_CLASSES",
    "VEHICLE_CLASSES",
    "Attribute",
    "BBox",
    "DetectedObject",
    "Enrichment",
    "HistoryPoint",
    "HomeState",
    "HomeStateError",
    "PersonSighting",
    "Posture",
    "SceneContext",
    "Sighting",
    "Threat",
    "category_of",
]

PERSON_CLASSES: frozenset[str] = frozenset({"person"})
VEHICLE_CLASSES: frozenset[str] = frozenset(
    {"car", "truck", "bus", "motorcycle", "bicycle", "train", "boat"}
)
ANIMAL_CLASSES: frozenset[str] = frozenset(
    {"dog", "cat", "bird", "horse", "sheep", "cow", "bear", "elephant", "zebra", "giraffe"}
)


def category_of(class_name: str) -> str:
    """Map a detector class name to the event's coarse ``counts`` category.

    The API's ``counts`` field and several rules reason in categories (person / vehicle /
    animal), not in the detector's label set, so a detector with other labels only needs its
    names added to the sets above.
    """
    if class_name in PERSON_CLASSES:
        return "person"
    if class_name in VEHICLE_CLASSES:
        return "vehicle"
    if class_name in ANIMAL_CLASSES:
        return "animal"
    return "other"


def _check_unit(name: str, value: float) -> None:
    """Reject confidences/similarities outside [0, 1] (NaN included) at construction time.

    Catching a bad value where the scene is built names the culprit; letting it through would
    surface later as an odd score that nobody can trace.
    """
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class BBox:
    """Pixel box of a detection, top-left corner plus size (the /v1/detect shape)."""

    x: float
    y: float
    width: float
    height: float

    def __post_init__(self) -> None:
        _check_non_negative("bbox.width", self.width)
        _check_non_negative("bbox.height", self.height)


@dataclass(frozen=True, slots=True)
class DetectedObject:
    """One detector output, with the image size so relative size needs no other input."""

    class_name: str
    confidence: float
    bbox: BBox
    image_width: int
    image_height: int

    def __post_init__(self) -> None:
        if not self.class_name:
            raise ValueError("class_name must not be empty")
        _check_unit("confidence", self.confidence)
        if self.image_width <= 0 or self.image_height <= 0:
            raise ValueError("image size must be positive")

    @property
    def category(self) -> str:
        """Coarse category (person / vehicle / animal / other)."""
        return category_of(self.class_name)

    @property
    def area_fraction(self) -> float:
        """Share of the frame the box covers: a large person is close to the camera."""
        frame = float(self.image_width * self.image_height)
        return min(1.0, (self.bbox.width * self.bbox.height) / frame)


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrichment:
    """Base of every zoo-model result attached to a scene.

    ``object_index`` points into :attr:`SceneContext.objects` when the record is about one
    detection (the posture of person #0), or is ``None`` for a whole-frame finding (smoke).
    Subclasses set ``kind`` (used for JSON) and override :meth:`describe` for the prompt.
    """

    kind: ClassVar[str] = "enrichment"
    model: str
    confidence: float
    object_index: int | None = None

    def __post_init__(self) -> None:
        _check_unit("confidence", self.confidence)

    def describe(self) -> str:
        """One prompt line; generic so unknown record types still reach the LLM."""
        return f"{self.kind} from {self.model}: confidence={round(self.confidence * 100)}%"

    def as_json(self) -> dict[str, Any]:
        """Plain JSON for the stored event; ``kind`` first so readers can dispatch on it."""
        out: dict[str, Any] = {"kind": self.kind}
        for name in self.__dataclass_fields__:
            out[name] = getattr(self, name)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Threat(Enrichment):
    """A dangerous thing in view: ``label`` is e.g. gun, knife, weapon, fire, smoke."""

    kind: ClassVar[str] = "threat"
    label: str

    def describe(self) -> str:
        """Seed-style alarm line, e.g. ``[CRITICAL] GUN DETECTED: confidence=95%``."""
        tag = "CRITICAL" if self.confidence >= 0.8 else "WARNING"
        return f"[{tag}] {self.label.upper()} DETECTED: confidence={round(self.confidence * 100)}%"


@dataclass(frozen=True, slots=True, kw_only=True)
class Posture(Enrichment):
    """Body posture of a person: ``posture`` is e.g. standing, crouching, lying, fallen."""

    kind: ClassVar[str] = "posture"
    posture: str

    def describe(self) -> str:
        """Prompt line; fallen/lying persons are flagged as a possible emergency."""
        urgent = self.posture in {"fallen", "lying"}
        tag = "[WARNING] " if urgent else ""
        who = "person" if self.object_index is None else f"person #{self.object_index + 1}"
        return f"{tag}Posture of {who}: {self.posture} (confidence={round(self.confidence * 100)}%)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Animal(Enrichment):
    """An animal the pet classifier looked at: a household pet (cat, dog) or not (a fox)."""

    kind: ClassVar[str] = "animal"
    species: str
    household: bool

    def describe(self) -> str:
        what = "household pet" if self.household else "not a household pet"
        return f"Animal: {self.species} ({what}, {round(self.confidence * 100)}%)"


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleKind(Enrichment):
    """The type of a detected vehicle (car, pickup, van, truck, bus, motorcycle, ...)."""

    kind: ClassVar[str] = "vehicle_type"
    vehicle_type: str

    def describe(self) -> str:
        return f"Vehicle: {self.vehicle_type} ({round(self.confidence * 100)}%)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Attribute(Enrichment):
    """Any other named finding (``name``=``value``): masked face, package, ladder, ..."""

    kind: ClassVar[str] = "attribute"
    name: str
    value: str

    def describe(self) -> str:
        """Prompt line for a finding the rules don't score yet."""
        return f"{self.name}: {self.value} (confidence={round(self.confidence * 100)}%)"


MATCHED_BY: frozenset[str] = frozenset({"face", "body"})
"""How re-ID can recognise a person: by the face, or by body appearance (clothes, build)."""


@dataclass(frozen=True, slots=True)
class Sighting:
    """Where else a re-identified person was seen: another camera and how long ago.

    ``by`` says which embedding matched (``face`` or ``body``) and ``similarity`` how closely
    (None when the source did not say). ``calibrated`` is False for a match from an embedder
    whose threshold does not keep false matches rare (MobileNetV2 appearance): such a sighting
    is context for the LLM, worded as a possibility, and the rules give it no points.
    """

    camera: str
    seconds_ago: float
    by: str = "face"
    similarity: float | None = None
    calibrated: bool = True

    def __post_init__(self) -> None:
        _check_non_negative("seconds_ago", self.seconds_ago)
        if self.by not in MATCHED_BY:
            raise ValueError(f"by must be one of {sorted(MATCHED_BY)}, got {self.by!r}")
        if self.similarity is not None and not (-1.0 <= self.similarity <= 1.0):
            raise ValueError(f"similarity must be within [-1, 1], got {self.similarity!r}")

    @property
    def how(self) -> str:
        """``body appearance, 0.83`` / ``face, 0.91``: how the match was made, for people."""
        what = "body appearance" if self.by == "body" else "face"
        return what if self.similarity is None else f"{what}, {self.similarity:.2f}"


@dataclass(frozen=True, slots=True)
class PersonSighting:
    """Re-ID result for one person in this frame.

    ``person_name`` is the enrolled name when the gallery matched a known person, else None
    (an unknown person is the main risk signal at home). ``similarity`` is the cosine
    similarity of the best gallery match; ``seen_elsewhere`` lists recent sightings of the same
    person on other cameras (someone walking round the house), by face or body appearance.
    One person detection gives at most one sighting: a face and a body match of the same
    person are merged into it, so persons are never counted twice.
    """

    person_name: str | None
    similarity: float
    seen_elsewhere: tuple[Sighting, ...] = ()
    object_index: int | None = None

    def __post_init__(self) -> None:
        if not (-1.0 <= self.similarity <= 1.0):
            raise ValueError(f"similarity must be within [-1, 1], got {self.similarity!r}")

    @property
    def known(self) -> bool:
        """True when the person is enrolled (the gallery gave a name)."""
        return self.person_name is not None


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One earlier analysis of the same camera: how long ago and how many persons it saw."""

    seconds_ago: float
    person_count: int

    def __post_init__(self) -> None:
        _check_non_negative("seconds_ago", self.seconds_ago)
        if self.person_count < 0:
            raise ValueError("person_count must be >= 0")


ALARM_STATES: tuple[str, ...] = (
    "disarmed",
    "armed_home",
    "armed_away",
    "armed_night",
    "armed_vacation",
    "triggered",
)
"""Alarm panel states a home state may carry: Home Assistant's alarm_control_panel states that
say something about who is home (the integration leaves transitional ones, like ``arming``,
out, and sends a custom bypass as ``armed_home``)."""

_NAME_LISTS = ("household_present", "doors_open", "unlocked")


class HomeStateError(ValueError):
    """A home state key has a wrong value; ``key`` names it so the API error can say which."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"home_state.{key}: {message}")
        self.key = key


@dataclass(frozen=True, slots=True)
class HomeState:
    """What the house itself says while the camera looks: alarm, occupancy, doors, guests.

    Home Assistant reads these from the entities the user picked and sends them with each
    analysis; a careful human weighs a stranger at the back door very differently when the alarm
    is armed away and nobody is home. Every field is optional (``None`` / empty = not known), so
    a home with only a presence sensor still sends what it has. Names are the entities'
    friendly names, for the factors' details and the prompt.
    """

    alarm: str | None = None
    people_home: int | None = None
    household_present: tuple[str, ...] = ()
    doors_open: tuple[str, ...] = ()
    unlocked: tuple[str, ...] = ()
    guests_expected: bool | None = None

    def __post_init__(self) -> None:
        if self.alarm is not None and self.alarm not in ALARM_STATES:
            raise HomeStateError("alarm", f"{self.alarm!r} is not one of {', '.join(ALARM_STATES)}")
        if self.people_home is not None and (
            isinstance(self.people_home, bool)
            or not isinstance(self.people_home, int)
            or self.people_home < 0
        ):
            raise HomeStateError(
                "people_home", f"must be an integer >= 0, got {self.people_home!r}"
            )
        if self.guests_expected is not None and not isinstance(self.guests_expected, bool):
            raise HomeStateError(
                "guests_expected", f"must be true or false, got {self.guests_expected!r}"
            )
        for key in _NAME_LISTS:
            names = getattr(self, key)
            if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
                raise HomeStateError(key, f"must be a list of non-empty names, got {names!r}")
            object.__setattr__(self, key, tuple(names))

    @classmethod
    def from_json(cls, raw: Any) -> HomeState:
        """From the analyze request's ``home_state`` object; a bad key raises
        :class:`HomeStateError` naming it (unknown keys too: a typo must not pass silently)."""
        if not isinstance(raw, Mapping):
            raise HomeStateError("", f"must be a JSON object, got {type(raw).__name__}")
        known = set(cls.__dataclass_fields__)
        for key in raw:
            if key not in known:
                raise HomeStateError(str(key), f"unknown key (known: {', '.join(sorted(known))})")
        for key in _NAME_LISTS:
            if key in raw and not isinstance(raw[key], list):
                raise HomeStateError(key, f"must be a list of names, got {raw[key]!r}")
        return cls(**{str(k): v for k, v in raw.items()})

    def as_json(self) -> dict[str, Any]:
        """The event's ``home_state`` echo: only the keys that were sent (known)."""
        out: dict[str, Any] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            if value is None or value == ():
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def nobody_home(self) -> bool:
        """True only when occupancy is known to be zero (not when it is unknown)."""
        return self.people_home == 0 and not self.household_present

    def describe(self) -> str:
        """One prompt line, e.g. ``alarm armed_away; nobody home; unlocked: Front door``."""
        parts: list[str] = []
        if self.alarm is not None:
            parts.append(f"alarm {self.alarm}")
        if self.nobody_home:
            parts.append("nobody home")
        elif self.people_home is not None:
            parts.append(f"{self.people_home} people home")
        if self.household_present:
            parts.append(f"household present: {', '.join(self.household_present)}")
        if self.doors_open:
            parts.append(f"open: {', '.join(self.doors_open)}")
        if self.unlocked:
            parts.append(f"unlocked: {', '.join(self.unlocked)}")
        if self.guests_expected is not None:
            parts.append("guests expected" if self.guests_expected else "no guests expected")
        return "; ".join(parts) or "nothing known"


E = TypeVar("E", bound=Enrichment)


def _freeze_enrichments(
    raw: Mapping[str, Sequence[Enrichment]],
) -> Mapping[str, Sequence[Enrichment]]:
    return MappingProxyType({str(k): tuple(v) for k, v in raw.items()})


@dataclass(frozen=True)
class SceneContext:
    """Everything known about one analyzed frame.

    ``home`` is the house's own state (alarm, occupancy, doors) when the caller sent it.
    ``timestamp`` must be timezone-aware: the time-of-day rule reads the local hour from its
    own offset (Home Assistant sends local time with offset), and a naive time would silently
    be interpreted in the add-on's zone. ``history`` is this camera's recent analyses, newest
    first or in any order; rules sort it themselves. Sequences and mappings given as lists and
    dicts are stored as tuples and read-only mappings.
    """

    camera: str
    timestamp: datetime
    objects: Sequence[DetectedObject] = ()
    zone: str | None = None
    enrichments: Mapping[str, Sequence[Enrichment]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    persons: Sequence[PersonSighting] = ()
    history: Sequence[HistoryPoint] = ()
    home: HomeState | None = None

    def __post_init__(self) -> None:
        if not self.camera:
            raise ValueError("camera must not be empty")
        if self.timestamp.tzinfo is None or self.timestamp.utcoffset() is None:
            raise ValueError("timestamp must be timezone-aware")
        # Accept lists/dicts from callers but store immutable copies, so a scene handed to
        # the LLM task and to the store can't change under either of them.
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "persons", tuple(self.persons))
        object.__setattr__(self, "history", tuple(self.history))
        object.__setattr__(self, "enrichments", _freeze_enrichments(self.enrichments))
        for records in self.enrichments.values():
            for rec in records:
                if rec.object_index is not None and not (0 <= rec.object_index < len(self.objects)):
                    raise ValueError(
                        f"{rec.kind} from {rec.model} points at object #{rec.object_index},"
                        f" but the scene has {len(self.objects)} objects"
                    )

    def all_enrichments(self) -> tuple[Enrichment, ...]:
        """Every record from every model, in model order."""
        return tuple(rec for recs in self.enrichments.values() for rec in recs)

    def enrichments_of(self, cls: type[E]) -> tuple[E, ...]:
        """Records of one type (e.g. all :class:`Threat`), whichever model produced them."""
        return tuple(rec for rec in self.all_enrichments() if isinstance(rec, cls))

    def objects_in(self, category: str) -> tuple[DetectedObject, ...]:
        """Detections of one coarse category (person / vehicle / animal / other)."""
        return tuple(o for o in self.objects if o.category == category)

    def class_counts(self) -> dict[str, int]:
        """Count per detector class, in first-seen order (for the "2 persons, 1 car" line)."""
        counts: dict[str, int] = {}
        for obj in self.objects:
            counts[obj.class_name] = counts.get(obj.class_name, 0) + 1
        return counts

    def counts(self) -> dict[str, int]:
        """The event's ``counts`` field: persons, vehicles, animals."""
        return {
            "person": len(self.objects_in("person")),
            "vehicle": len(self.objects_in("vehicle")),
            "animal": len(self.objects_in("animal")),
        }

    @property
    def person_count(self) -> int:
        """Persons in view: detections, or re-ID sightings if those are more."""
        return max(len(self.objects_in("person")), len(self.persons))

    def enrichments_json(self) -> dict[str, list[dict[str, Any]]]:
        """The event's ``enrichments`` field, keyed by producing model."""
        return {model: [r.as_json() for r in recs] for model, recs in self.enrichments.items()}
