"""Deterministic rule engine: named factors with points, summed into a 0-100 score.

The rules are the floor of Vigil's judgement: they run on every frame, take microseconds,
never fail and always say *why* (each factor carries a name, its points and a human detail).
The LLM, when available, only adjusts their score (see :mod:`risk`).

Rules are a table (:data:`RULES`): each entry is a name and a pure function from
``(SceneContext, RuleConfig)`` to zero or more :class:`Factor`. All points and thresholds live in
:class:`RuleConfig`, so a deployment tunes weights in YAML without touching code, and a new rule
is one function plus one table row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, NamedTuple

from .context import (
    Animal,
    DetectedObject,
    Posture,
    SceneContext,
    Sighting,
    Threat,
    VehicleKind,
)
from .levels import clamp_score

__all__ = [
    "POINTS",
    "RULES",
    "RULE_NAMES",
    "Factor",
    "Rule",
    "RuleConfig",
    "RuleEngine",
    "RuleResult",
    "dwell_seconds",
    "format_duration",
    "plural",
]


@dataclass(frozen=True, slots=True)
class Factor:
    """One reason behind a score: ``points`` may be negative (a known person lowers risk)."""

    name: str
    points: int
    detail: str

    def as_json(self) -> dict[str, Any]:
        """The event's ``factors[]`` item."""
        return {"name": self.name, "points": self.points, "detail": self.detail}


def _frozen(m: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(m))


POINTS = (-100, 100)
"""Range of every point value: one factor can at most fill or empty the 0-100 scale."""


def _setting(default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    """A :class:`RuleConfig` field whose valid range travels with it: the config schema
    (``config.py``) and :meth:`RuleConfig.__post_init__` both read it from the metadata."""
    return field(default=default, metadata={"range": (lo, hi)})


def _points(default: int) -> Any:
    return _setting(default, *POINTS)


def _names(default: set[str]) -> Any:
    """A set of names (zones, postures), matched case-insensitively."""
    return field(default_factory=lambda: frozenset(default), metadata={"names": True})


def _table(default: Mapping[str, int]) -> Any:
    """A table of points by label (threat, posture, zone), each entry in :data:`POINTS`."""
    return field(default_factory=lambda: _frozen(default), metadata={"range": POINTS})


@dataclass(frozen=True)
class RuleConfig:
    """Every weight and threshold of the rules; defaults are tuned for a home.

    The defaults reason the way a careful homeowner does (the risk evaluation set,
    ``benchmarks/risk_eval/``, holds the scenes and their ``why``): an unknown person briefly at
    the door by day or in the evening is a caller (low); the same at 3 am is high, and crouching
    by a window or climbing a fence then is critical; staying at the door for minutes without
    ringing is high at any hour, while a long stay by day in the garden is someone working;
    people on the public pavement are passing, not approaching; a faint person-like detection
    that nothing corroborates is probably a shadow; a fallen person is high whoever they are;
    fire or smoke at night is an alarm; a confident gun is critical whatever else is in view.
    The home state (alarm armed, nobody home, a door unlocked, guests expected) moves an
    unknown person's score the way it moves a human's worry. Each field is one key of the
    config's ``reasoning.rules`` section; its range is in the field's metadata.
    """

    # Threats: points at 100 % confidence, scaled by the detector's confidence.
    threat_points: Mapping[str, int] = _table(
        {
            "gun": 100,
            "firearm": 100,
            "pistol": 100,
            "rifle": 100,
            "weapon": 90,
            "knife": 75,
            "fire": 90,
            "smoke": 45,
        }
    )
    default_threat_points: int = _points(60)
    threat_min_confidence: float = _setting(0.35, 0.0, 1.0)
    night_fire_points: int = _points(30)
    """Fire or smoke at night, when nobody is awake to notice it."""

    # People.
    person_points: int = _points(10)
    unknown_person_points: int = _points(25)
    extra_unknown_person_points: int = _points(10)
    max_unknown_person_points: int = _points(45)
    known_person_points: int = _points(-20)
    accompanied_points: int = _points(-20)
    """Unknown persons with an enrolled resident: the resident's company (not 0-5 h)."""
    crowd_size: int = _setting(4, 1)
    crowd_points: int = _points(10)
    close_area_fraction: float = _setting(0.25, 0.0, 1.0)
    close_points: int = _points(5)
    cross_camera_points: int = _points(10)
    cross_camera_window_seconds: float = _setting(900.0, 0.0)
    faint_person_confidence: float = _setting(0.65, 0.0, 1.0)
    """Below this, a person detection is faint: a shadow, a statue, a reflection, unless a
    posture or threat record on it or an enrolled match corroborates it."""
    faint_person_points: int = _points(10)
    faint_corroborated_points: int = _points(-10)
    occupant_overlap: float = _setting(0.5, 0.0, 1.0)
    """A person box at least this much inside a vehicle's box, and ending above its wheels, is
    its driver or rider (see :func:`_occupant`)."""
    occupant_points: int = _points(10)

    # Time of day: hours in the timestamp's own offset (the camera's local time).
    night_start_hour: int = _setting(22, 0, 23)
    night_end_hour: int = _setting(5, 0, 23)
    night_points: int = _points(10)
    small_hours_start_hour: int = _setting(0, 0, 23)
    small_hours_end_hour: int = _setting(5, 0, 23)
    small_hours_points: int = _points(15)
    """On top of ``night_points`` between midnight and five: nobody calls then."""
    daytime_points: int = _points(-10)
    """An unknown person outside the night window: callers, deliveries, neighbours."""

    # Dwell / loitering across this camera's recent frames.
    loiter_seconds: float = _setting(120.0, 0.0)
    long_loiter_seconds: float = _setting(300.0, 0.0)
    loiter_points: int = _points(25)
    long_loiter_points: int = _points(35)
    """At night, anywhere but the public pavement."""
    entry_loiter_points: int = _points(35)
    entry_long_loiter_points: int = _points(45)
    """At a door or window, any hour: staying there without ringing."""
    day_loiter_points: int = _points(10)
    day_work_points: int = _points(-20)
    """A long stay by day away from the doors and windows: someone working (the gardener)."""
    history_gap_seconds: float = _setting(90.0, 0.0)

    # Posture (from a zoo pose/fall model).
    posture_points: Mapping[str, int] = _table(
        {"fallen": 60, "lying": 50, "climbing": 25, "crouching": 25}
    )
    posture_min_confidence: float = _setting(0.5, 0.0, 1.0)
    day_postures: frozenset[str] = _names({"crouching"})
    """Postures that score nothing by day (parcels are put down, beds are weeded)."""
    emergency_postures: frozenset[str] = _names({"fallen", "lying"})
    """Someone on the ground: an emergency whoever they are (identity and time don't count)."""

    # Vehicles, animals, zones.
    vehicle_points: int = _points(0)
    """Any vehicle, any hour (a car by day is nothing, so none by default)."""
    vehicle_night_points: int = _points(10)
    parked_small_hours_points: int = _points(30)
    """A vehicle between midnight and five with nobody on foot: stopped outside, why?"""
    pets_only_points: int = _points(-10)
    wild_animal_points: int = _points(10)
    vehicle_type_points: Mapping[str, int] = _table({})
    """Extra points per vehicle type from the zoo's classifier (none by default)."""
    zone_points: Mapping[str, int] = _table({})
    public_zones: frozenset[str] = _names({"pavement", "sidewalk", "street", "road"})
    """People there are passing: an unknown face is no evidence (their points are cancelled)."""
    entry_zones: frozenset[str] = _names({"porch", "door", "doorway", "window", "patio"})
    private_zones: frozenset[str] = _names(
        {"garden", "backyard", "back_yard", "fence", "side_path", "patio"}
    )
    private_zone_points: int = _points(10)
    """An unknown person behind the house, where callers have no reason to be."""

    # Home state (sent by Home Assistant with the analysis).
    alarm_points: Mapping[str, int] = _table(
        {
            "armed_away": 25,
            "armed_vacation": 25,
            "armed_night": 10,
            "armed_home": 10,
            "triggered": 30,
        }
    )
    nobody_home_points: int = _points(15)
    door_unlocked_points: int = _points(10)
    door_open_points: int = _points(10)
    household_present_points: int = _points(-20)
    """Residents at home by day: a caller will be answered (nothing at night: they sleep)."""

    disabled_rules: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for f in fields(self):
            lo, hi = f.metadata.get("range", (None, None))
            value = getattr(self, f.name)
            for label, number in value.items() if isinstance(value, Mapping) else [("", value)]:
                where = f"{f.name}.{label}" if label else f.name
                if (lo is not None and number < lo) or (hi is not None and number > hi):
                    raise ValueError(f"{where}: {number!r} is outside {_span(lo, hi)}")
        unknown = set(self.disabled_rules) - set(RULE_NAMES)
        if unknown:
            raise ValueError(f"disabled_rules: unknown rule(s) {sorted(unknown)}")
        for name in TABLES:
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "disabled_rules", frozenset(self.disabled_rules))
        for f in fields(self):
            if f.metadata.get("names"):
                object.__setattr__(
                    self, f.name, frozenset(n.lower() for n in getattr(self, f.name))
                )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RuleConfig:
        """Defaults overridden by a validated config section (unknown keys are an error).

        The table-valued weights (threat_points, posture_points, zone_points) *merge* into the
        defaults, so a user adding ``axe: 70`` keeps gun and knife.
        """
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown rule setting(s): {sorted(unknown)}")
        base = cls()
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key in TABLES:
                merged = dict(getattr(base, key))
                merged.update({str(k).lower(): int(v) for k, v in dict(value).items()})
                kwargs[key] = merged
            elif key == "disabled_rules" or key in NAME_SETS:
                kwargs[key] = frozenset(value)
            else:
                kwargs[key] = value
        return replace(base, **kwargs)

    def is_night(self, hour: int) -> bool:
        """Night window that may wrap midnight (22 → 5) or not (1 → 5)."""
        return _in_window(hour, self.night_start_hour, self.night_end_hour)

    def is_small_hours(self, hour: int) -> bool:
        """The dead of night (0 → 5): inside the night, when nobody calls at all."""
        return _in_window(hour, self.small_hours_start_hour, self.small_hours_end_hour)


TABLES = ("threat_points", "posture_points", "zone_points", "vehicle_type_points", "alarm_points")
"""The table-valued settings: a config's entries merge into the defaults."""

NAME_SETS = tuple(f.name for f in fields(RuleConfig) if f.metadata.get("names"))
"""The name-set settings (zones, postures): a config's list replaces the default."""


def _in_window(hour: int, start: int, end: int) -> bool:
    """An hour window that may wrap midnight; an empty one (start == end) holds no hour."""
    if start == end:
        return False
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end


def _span(lo: float | None, hi: float | None) -> str:
    if hi is None:
        return f">= {lo:g}" if lo is not None else "any value"
    return f"{lo:g}..{hi:g}" if lo is not None else f"<= {hi:g}"


def plural(n: int, word: str) -> str:
    """``1 person``, ``2 persons`` (the seeds' wording, not ``people``)."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_duration(seconds: float) -> str:
    """``45 s`` below a minute and a half, else whole minutes (``5 minutes``)."""
    if seconds < 90:
        return f"{round(seconds)} s"
    minutes = int(seconds / 60 + 0.5)
    return f"{minutes} minute" if minutes == 1 else f"{minutes} minutes"


# --- what the rules share: who is in view, when, where ---------------------------------------


def _inside(inner: DetectedObject, outer: DetectedObject) -> float:
    """Share of ``inner``'s box that lies inside ``outer``'s (0 when they don't touch)."""
    a, b = inner.bbox, outer.bbox
    w = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    h = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    area = a.width * a.height
    return 0.0 if w <= 0 or h <= 0 or area <= 0 else (w * h) / area


def _occupant(person: DetectedObject, vehicle: DetectedObject, cfg: RuleConfig) -> bool:
    """A person seated in or riding a vehicle: the box lies mostly inside the vehicle's and
    ends clearly above its bottom edge. Someone standing in front of a bus overlaps it just as
    much, but their feet reach the ground at or below the bus's wheels."""
    v = vehicle.bbox
    bottom = person.bbox.y + person.bbox.height
    return _inside(person, vehicle) >= cfg.occupant_overlap and bottom <= v.y + v.height * (
        1 - OCCUPANT_FEET_MARGIN
    )


OCCUPANT_FEET_MARGIN = 0.1
"""How far (share of the vehicle's height) above its bottom edge an occupant's box must end."""


@dataclass(frozen=True, slots=True)
class People:
    """The persons in a scene as the rules count them.

    ``on_foot`` is the number of persons standing on the property (the detector's solid person
    boxes, or the re-ID sightings if those are more); a person box mostly inside a vehicle's is
    its driver or rider (``occupants``), and a faint box that nothing corroborates is probably
    a shadow, a statue or a reflection (``faint``); neither counts as someone at the house.
    ``faint_kept`` are faint boxes that a posture/threat record or an enrolled match vouches for.
    """

    on_foot: int
    known: tuple[str, ...]
    n_known: int
    occupants: int
    faint: tuple[float, ...]
    faint_kept: int

    @property
    def unknown(self) -> int:
        """Persons on foot without an enrolled match."""
        return max(0, self.on_foot - self.n_known)


def people(ctx: SceneContext, cfg: RuleConfig) -> People:
    """Count the scene's persons the way :class:`People` describes."""
    objects = list(ctx.objects)
    vehicles = ctx.objects_in("vehicle")
    vouched = {
        rec.object_index
        for rec in ctx.all_enrichments()
        if isinstance(rec, Threat | Posture) and rec.confidence >= cfg.posture_min_confidence
    } | {p.object_index for p in ctx.persons if p.known}
    solid = occupants = kept = 0
    faint: list[float] = []
    set_aside: set[int] = set()  # boxes that are not someone on foot
    for index, obj in enumerate(objects):
        if obj.category != "person":
            continue
        if any(_occupant(obj, v, cfg) for v in vehicles):
            occupants += 1
            set_aside.add(index)
        elif obj.confidence < cfg.faint_person_confidence and index not in vouched:
            faint.append(obj.confidence)
            set_aside.add(index)
        else:
            solid += 1
            kept += obj.confidence < cfg.faint_person_confidence
    # Re-ID sightings without a box (or more sightings than boxes) are persons too, except
    # those pointing at a box set aside as an occupant or a faint detection.
    sightings = [p for p in ctx.persons if p.object_index not in set_aside]
    known = tuple(sorted({p.person_name for p in sightings if p.person_name is not None}))
    return People(
        on_foot=max(solid, len(sightings)),
        known=known,
        n_known=sum(1 for p in sightings if p.known),
        occupants=occupants,
        faint=tuple(faint),
        faint_kept=kept,
    )


def _zone_in(ctx: SceneContext, zones: frozenset[str]) -> bool:
    return ctx.zone is not None and ctx.zone.lower() in zones


def _emergency(ctx: SceneContext, cfg: RuleConfig) -> Posture | None:
    """The worst scored emergency posture (fallen, lying) in view, if any.

    Lying by day in the garden is resting (a child on the lawn), not an emergency."""
    found = [
        p
        for p in ctx.enrichments_of(Posture)
        if p.confidence >= cfg.posture_min_confidence
        and p.posture.lower() in cfg.emergency_postures
        and cfg.posture_points.get(p.posture.lower(), 0)
        and not _resting(ctx, cfg, p)
    ]
    return max(found, key=lambda p: cfg.posture_points.get(p.posture.lower(), 0), default=None)


def _resting(ctx: SceneContext, cfg: RuleConfig, p: Posture) -> bool:
    return (
        p.posture.lower() == "lying"
        and not cfg.is_night(ctx.timestamp.hour)
        and _zone_in(ctx, cfg.private_zones)
    )


def _intruder(ctx: SceneContext, cfg: RuleConfig) -> People | None:
    """The scene's persons when an unknown one is on foot and nobody is on the ground.

    The intrusion rules (time of day, loitering, zones, home state) weigh an unknown person;
    a fallen person is an emergency whoever they are, and their intrusion evidence would only
    push a fall from "tell me now" to "act now" (the fall rule gives it its band)."""
    if _emergency(ctx, cfg) is not None:
        return None
    found = people(ctx, cfg)
    return found if found.unknown else None


# --- the rules -------------------------------------------------------------------------------


def _rule_threats(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """Weapons, fire, smoke: the strongest record per label counts once; fire or smoke at
    night adds ``night_fire_points`` (a fire starting while the house sleeps)."""
    best: dict[str, Threat] = {}
    for t in ctx.enrichments_of(Threat):
        label = t.label.lower()
        if t.confidence < cfg.threat_min_confidence:
            continue
        if label not in best or t.confidence > best[label].confidence:
            best[label] = t
    for label, t in best.items():
        base = cfg.threat_points.get(label, cfg.default_threat_points)
        yield Factor(
            f"threat_{label}",
            round(base * t.confidence),
            f"{label} detected by {t.model} (confidence {round(t.confidence * 100)}%)",
        )
    fires = sorted(label for label in best if label in {"fire", "smoke"})
    if fires and cfg.is_night(ctx.timestamp.hour):
        yield Factor(
            "night_fire",
            cfg.night_fire_points,
            f"{' and '.join(fires)} at {ctx.timestamp:%H:%M}, while the house sleeps",
        )


def _rule_persons(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """Presence of people; a crowd and a person close to the lens add a little; a faint
    detection nothing corroborates counts only as a possible person."""
    found = people(ctx, cfg)
    n = found.on_foot
    if n:
        yield Factor("person_present", cfg.person_points, f"{plural(n, 'person')} in view")
    if n >= cfg.crowd_size:
        yield Factor("group", cfg.crowd_points, f"group of {n} persons")
    if found.faint and not n:
        confs = ", ".join(f"{round(c * 100)}%" for c in found.faint)
        yield Factor(
            "faint_person",
            cfg.faint_person_points,
            f"faint person-like detection ({confs}) that nothing corroborates: shadow or object?",
        )
    if found.faint_kept and not _emergency(ctx, cfg):
        yield Factor(
            "faint_detection",
            cfg.faint_corroborated_points,
            "the detector is unsure of the person (a posture or match vouches for it)",
        )
    if not n:
        return
    close = [o for o in ctx.objects_in("person") if o.area_fraction >= cfg.close_area_fraction]
    if close:
        share = max(o.area_fraction for o in close)
        yield Factor(
            "close_to_camera",
            cfg.close_points,
            f"person fills {round(share * 100)}% of the frame",
        )


def _rule_identity(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """Unknown vs enrolled people: a person without a re-ID match counts as unknown; unknown
    persons with an enrolled resident are their company (not in the small hours)."""
    if _emergency(ctx, cfg) is not None:
        return
    found = people(ctx, cfg)
    if not found.on_foot:
        return
    n_unknown = found.unknown
    if n_unknown:
        pts = _unknown_points(found, cfg)
        detail = (
            f"{plural(n_unknown, 'person')} not enrolled"
            if not found.n_known
            else f"{plural(n_unknown, 'person')} not enrolled (with {', '.join(found.known)})"
        )
        yield Factor("unknown_person", pts, detail)
    if found.n_known and not n_unknown:
        yield Factor("known_person", cfg.known_person_points, f"enrolled: {', '.join(found.known)}")
    elif found.n_known and not cfg.is_small_hours(ctx.timestamp.hour):
        yield Factor(
            "accompanied",
            cfg.accompanied_points,
            f"with enrolled {', '.join(found.known)}: their company",
        )


def _rule_cross_camera(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """An unknown person also seen on other cameras recently, at night, is moving around the
    property (by day that is the postman walking from the gate to the door).

    Only calibrated matches count (faces, and bodies from an embedder whose threshold keeps
    false matches at or below 1 %): a weak body match is left to the LLM as context.
    """
    if not cfg.is_night(ctx.timestamp.hour) or _intruder(ctx, cfg) is None:
        return
    cams: dict[str, Sighting] = {}
    for p in ctx.persons:
        if p.known:
            continue
        for s in p.seen_elsewhere:
            if (
                s.calibrated
                and s.camera != ctx.camera
                and s.seconds_ago <= cfg.cross_camera_window_seconds
            ):
                previous = cams.get(s.camera)
                if previous is None or s.seconds_ago < previous.seconds_ago:
                    cams[s.camera] = s
    if not cams:
        return
    where = ", ".join(
        f"{s.camera} {format_duration(s.seconds_ago)} ago"
        + (f" ({s.how})" if s.similarity is not None else "")
        for s in sorted(cams.values(), key=lambda s: s.seconds_ago)
    )
    yield Factor(
        "seen_on_other_cameras", cfg.cross_camera_points, f"unknown person seen on {where}"
    )


def _rule_night(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """The hour weighs an unknown person: nobody calls between midnight and five; late evening
    is a little odd; by day and in the evening callers are normal. Empty, pets-only and
    residents-only scenes get nothing."""
    if _intruder(ctx, cfg) is None:
        return
    hour = ctx.timestamp.hour
    if cfg.is_night(hour):
        yield Factor("night", cfg.night_points, f"time {ctx.timestamp:%H:%M} is night")
        if cfg.is_small_hours(hour):
            yield Factor(
                "small_hours",
                cfg.small_hours_points,
                f"{ctx.timestamp:%H:%M}: nobody calls at this hour",
            )
    else:
        yield Factor(
            "daytime", cfg.daytime_points, f"{ctx.timestamp:%H:%M}: usual hours for callers"
        )


def dwell_seconds(ctx: SceneContext, cfg: RuleConfig) -> tuple[float, int]:
    """How long persons have been in view without a break, and over how many frames.

    Walks this camera's history from the newest frame back; the run ends at the first frame
    without a person or at a gap longer than ``history_gap_seconds`` (missed frames are not
    evidence that someone stayed).
    """
    if ctx.person_count == 0:
        return 0.0, 0
    dwell = 0.0
    frames = 1
    previous = 0.0
    for point in sorted(ctx.history, key=lambda p: p.seconds_ago):
        if point.seconds_ago - previous > cfg.history_gap_seconds or point.person_count == 0:
            break
        dwell = previous = point.seconds_ago
        frames += 1
    return dwell, frames


def _rule_loitering(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """An unknown person staying in view across recent frames, weighed by where and when.

    At a door or window, staying minutes without ringing is suspicious at any hour; at night
    it is anywhere on the property; by day elsewhere a short stay adds a little and a long one
    is someone working (the gardener, a tradesman). On the public pavement nobody loiters.
    """
    if _intruder(ctx, cfg) is None or _zone_in(ctx, cfg.public_zones):
        return
    dwell, frames = dwell_seconds(ctx, cfg)
    if dwell < cfg.loiter_seconds:
        return
    long = dwell >= cfg.long_loiter_seconds
    how = f"persons in view for {format_duration(dwell)} across {frames} frames"
    if _zone_in(ctx, cfg.entry_zones):
        pts = cfg.entry_long_loiter_points if long else cfg.entry_loiter_points
        yield Factor("loitering", pts, f"{how} at the {ctx.zone}")
    elif cfg.is_night(ctx.timestamp.hour):
        yield Factor("loitering", cfg.long_loiter_points if long else cfg.loiter_points, how)
    else:
        yield Factor("loitering", cfg.day_loiter_points, how)
        if long:
            yield Factor(
                "working",
                cfg.day_work_points,
                f"a long stay by day away from the doors: someone working ({how})",
            )


def _rule_posture(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """Fallen/lying persons (an emergency), climbing, crouching: the worst posture counts.

    Crouching scores nothing by day (a courier puts a parcel down, a gardener weeds) and lying
    by day in the garden is resting; at night both are what a burglar does."""
    emergency = _emergency(ctx, cfg)
    night = cfg.is_night(ctx.timestamp.hour)
    scored = [
        (cfg.posture_points.get(p.posture.lower(), 0), p)
        for p in ctx.enrichments_of(Posture)
        if p.confidence >= cfg.posture_min_confidence
        and (night or p.posture.lower() not in cfg.day_postures)
        and not _resting(ctx, cfg, p)
    ]
    scored = [(pts, p) for pts, p in scored if pts]
    if emergency is not None:
        scored = [(pts, p) for pts, p in scored if p is emergency]
    if not scored:
        return
    pts, p = max(scored, key=lambda x: (x[0], x[1].confidence))
    yield Factor(
        f"posture_{p.posture.lower()}",
        pts,
        f"person {p.posture.lower()} (confidence {round(p.confidence * 100)}%)",
    )


def _rule_vehicles(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """Vehicles in view: nothing by day, a little at night, and a vehicle stopped outside in
    the small hours with nobody on foot is odd enough for a look; someone sitting in it more."""
    vehicles = ctx.objects_in("vehicle")
    if not vehicles:
        return
    hour = ctx.timestamp.hour
    found = people(ctx, cfg)
    night = cfg.is_night(hour)
    alone = cfg.is_small_hours(hour) and not found.on_foot
    pts = cfg.parked_small_hours_points if alone else cfg.vehicle_night_points if night else 0
    pts += cfg.vehicle_points
    desc = _describe_classes(vehicles)
    kinds = sorted({v.vehicle_type for v in ctx.enrichments_of(VehicleKind)})
    if kinds:
        desc += f" ({', '.join(kinds)})"
        pts += max((cfg.vehicle_type_points.get(k, 0) for k in kinds), key=abs, default=0)
    when = " at night, nobody on foot" if alone else " at night" if night else ""
    yield Factor("vehicle", pts, f"{desc} in view{when}")
    if found.occupants and night:
        yield Factor(
            "vehicle_occupied",
            cfg.occupant_points,
            f"{plural(found.occupants, 'person')} inside the vehicle at night",
        )


def _rule_pets_only(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """Only animals (the cat on the porch) lower the score: the commonest false alarm."""
    animals = ctx.objects_in("animal")
    if not animals or ctx.person_count or ctx.objects_in("vehicle"):
        return
    wild = [a for a in ctx.enrichments_of(Animal) if not a.household]
    if wild:  # the pet classifier saw a fox or a bear, not the household's cat
        yield Factor(
            "wild_animal",
            cfg.wild_animal_points,
            f"not a household pet: {', '.join(sorted({a.species for a in wild}))}",
        )
        return
    yield Factor("pets_only", cfg.pets_only_points, f"only animals: {_describe_classes(animals)}")


def _rule_zone(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """Where an unknown person is: on the public pavement they are passing (their unknown-face
    points are cancelled), behind the house they have no caller's reason to be; plus any
    per-zone weight from the config."""
    found = _intruder(ctx, cfg)
    if ctx.zone is None or found is None:
        return
    zone = ctx.zone.lower()
    if zone in cfg.public_zones:
        yield Factor(
            "public_area",
            -_unknown_points(found, cfg),
            f"zone {ctx.zone} is public: passers-by, not callers",
        )
    elif zone in cfg.private_zones:
        yield Factor("private_area", cfg.private_zone_points, f"zone {ctx.zone} is private")
    pts = cfg.zone_points.get(zone, 0)
    if pts:
        yield Factor("zone", pts, f"zone {ctx.zone}")


def _unknown_points(found: People, cfg: RuleConfig) -> int:
    """What the identity rule gave the scene's unknown persons (what context may cancel)."""
    return min(
        cfg.max_unknown_person_points,
        cfg.unknown_person_points + (found.unknown - 1) * cfg.extra_unknown_person_points,
    )


AWAY_ALARMS = frozenset({"armed_away", "armed_vacation"})
"""Alarm states that themselves mean the house is empty."""


def _rule_home(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """The house's own state weighs an unknown person on foot: an armed alarm, nobody home, a
    door unlocked or open raise it; residents at home by day and expected guests lower it.

    Nothing when only residents, animals or an empty frame are in view: the alarm armed away
    does not make the cat more dangerous.
    """
    home = ctx.home
    found = _intruder(ctx, cfg)
    if home is None or found is None:
        return
    hour = ctx.timestamp.hour
    if home.alarm is not None:
        pts = cfg.alarm_points.get(home.alarm, 0)
        if pts:
            name = "alarm_armed_away" if home.alarm == "armed_vacation" else f"alarm_{home.alarm}"
            yield Factor(name, pts, f"alarm {home.alarm.replace('_', ' ')}")
    away = home.alarm in AWAY_ALARMS  # already says nobody is home: not counted twice
    if home.nobody_home and not away:
        yield Factor("nobody_home", cfg.nobody_home_points, "nobody is home")
    elif (home.household_present or home.people_home) and not cfg.is_night(hour):
        who = ", ".join(home.household_present) or plural(home.people_home or 0, "resident")
        yield Factor("household_present", cfg.household_present_points, f"{who} at home to answer")
    if home.unlocked:
        yield Factor(
            "door_unlocked", cfg.door_unlocked_points, f"unlocked: {', '.join(home.unlocked)}"
        )
    if home.doors_open:
        yield Factor("door_open", cfg.door_open_points, f"open: {', '.join(home.doors_open)}")
    if home.guests_expected and not cfg.is_small_hours(hour):
        yield Factor(
            "guests_expected",
            -_unknown_points(found, cfg),
            "guests expected: unknown persons are probably them",
        )


def _describe_classes(objects: Iterable[DetectedObject]) -> str:
    counts: dict[str, int] = {}
    for o in objects:
        counts[o.class_name] = counts.get(o.class_name, 0) + 1
    return ", ".join(plural(n, name) for name, n in counts.items())


class Rule(NamedTuple):
    """A row of the rule table."""

    name: str
    evaluate: Callable[[SceneContext, RuleConfig], Iterable[Factor]]


RULES: tuple[Rule, ...] = (
    Rule("threats", _rule_threats),
    Rule("persons", _rule_persons),
    Rule("identity", _rule_identity),
    Rule("cross_camera", _rule_cross_camera),
    Rule("night", _rule_night),
    Rule("loitering", _rule_loitering),
    Rule("posture", _rule_posture),
    Rule("vehicles", _rule_vehicles),
    Rule("pets_only", _rule_pets_only),
    Rule("zone", _rule_zone),
    Rule("home", _rule_home),
)

RULE_NAMES: tuple[str, ...] = tuple(r.name for r in RULES)
"""What ``disabled_rules`` may name."""


@dataclass(frozen=True, slots=True)
class RuleResult:
    """The rules' verdict: the clamped score and the factors, biggest effect first."""

    score: int
    factors: tuple[Factor, ...]

    @property
    def raw_total(self) -> int:
        """Sum of factor points before clamping to 0-100."""
        return sum(f.points for f in self.factors)


class RuleEngine:
    """Runs the rule table over a scene; stateless and cheap, so one instance serves all."""

    def __init__(self, config: RuleConfig | None = None) -> None:
        self.config = config or RuleConfig()
        self._rules = tuple(r for r in RULES if r.name not in self.config.disabled_rules)

    def evaluate(self, ctx: SceneContext) -> RuleResult:
        """Score a scene: sum of factor points clamped to 0-100."""
        found: list[Factor] = []
        for rule in self._rules:
            found.extend(f for f in rule.evaluate(ctx, self.config) if f.points != 0)
        found.sort(key=lambda f: (-abs(f.points), f.name))
        total = sum(f.points for f in found)
        return RuleResult(score=clamp_score(total), factors=tuple(found))
