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


def _table(default: Mapping[str, int]) -> Any:
    """A table of points by label (threat, posture, zone), each entry in :data:`POINTS`."""
    return field(default_factory=lambda: _frozen(default), metadata={"range": POINTS})


@dataclass(frozen=True)
class RuleConfig:
    """Every weight and threshold of the rules; defaults are tuned for a home.

    The defaults put one unknown person in daylight at 35 (medium), the same at night at 55,
    lingering at night above 60 (high), a fallen enrolled resident at 60 (high; an unknown one
    is critical) and a confident gun above 85 (critical) whatever else is in view; an enrolled
    person or pets alone stay low. Each field is one key of the config's ``reasoning.rules``
    section; its range is in the field's metadata.
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

    # People.
    person_points: int = _points(10)
    unknown_person_points: int = _points(25)
    extra_unknown_person_points: int = _points(10)
    max_unknown_person_points: int = _points(45)
    known_person_points: int = _points(-20)
    partly_known_points: int = _points(-5)
    crowd_size: int = _setting(4, 1)
    crowd_points: int = _points(10)
    close_area_fraction: float = _setting(0.25, 0.0, 1.0)
    close_points: int = _points(5)
    cross_camera_points: int = _points(10)
    cross_camera_window_seconds: float = _setting(900.0, 0.0)

    # Time of day: hours in the timestamp's own offset (the camera's local time).
    night_start_hour: int = _setting(22, 0, 23)
    night_end_hour: int = _setting(6, 0, 23)
    night_points: int = _points(20)

    # Dwell / loitering across this camera's recent frames.
    loiter_seconds: float = _setting(120.0, 0.0)
    loiter_points: int = _points(15)
    long_loiter_seconds: float = _setting(300.0, 0.0)
    long_loiter_points: int = _points(25)
    history_gap_seconds: float = _setting(90.0, 0.0)

    # Posture (from a zoo pose/fall model).
    posture_points: Mapping[str, int] = _table(
        {"fallen": 70, "lying": 50, "climbing": 25, "crouching": 10}
    )
    posture_min_confidence: float = _setting(0.5, 0.0, 1.0)

    # Vehicles, animals, zones.
    vehicle_points: int = _points(5)
    vehicle_night_points: int = _points(10)
    pets_only_points: int = _points(-10)
    wild_animal_points: int = _points(10)
    vehicle_type_points: Mapping[str, int] = _table({})
    """Extra points per vehicle type from the zoo's classifier (none by default)."""
    zone_points: Mapping[str, int] = _table({})

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
        for name in ("threat_points", "posture_points", "zone_points", "vehicle_type_points"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "disabled_rules", frozenset(self.disabled_rules))

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
            if key in {"threat_points", "posture_points", "zone_points", "vehicle_type_points"}:
                merged = dict(getattr(base, key))
                merged.update({str(k).lower(): int(v) for k, v in dict(value).items()})
                kwargs[key] = merged
            elif key == "disabled_rules":
                kwargs[key] = frozenset(value)
            else:
                kwargs[key] = value
        return replace(base, **kwargs)

    def is_night(self, hour: int) -> bool:
        """Night window that may wrap midnight (22 → 6) or not (1 → 5)."""
        if self.night_start_hour == self.night_end_hour:
            return False
        if self.night_start_hour < self.night_end_hour:
            return self.night_start_hour <= hour < self.night_end_hour
        return hour >= self.night_start_hour or hour < self.night_end_hour


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


# --- the rules -------------------------------------------------------------------------------


def _rule_threats(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """Weapons, fire, smoke: the strongest record per label counts once."""
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


def _rule_persons(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """Presence of people; a crowd and a person close to the lens add a little."""
    n = ctx.person_count
    if n == 0:
        return
    yield Factor("person_present", cfg.person_points, f"{plural(n, 'person')} in view")
    if n >= cfg.crowd_size:
        yield Factor("group", cfg.crowd_points, f"group of {n} persons")
    close = [o for o in ctx.objects_in("person") if o.area_fraction >= cfg.close_area_fraction]
    if close:
        share = max(o.area_fraction for o in close)
        yield Factor(
            "close_to_camera",
            cfg.close_points,
            f"person fills {round(share * 100)}% of the frame",
        )


def _rule_identity(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """Unknown vs enrolled people: a person without a re-ID match counts as unknown."""
    n = ctx.person_count
    if n == 0:
        return
    known = sorted({p.person_name for p in ctx.persons if p.person_name is not None})
    n_known = sum(1 for p in ctx.persons if p.known)
    n_unknown = max(0, n - n_known)
    if n_unknown:
        pts = min(
            cfg.max_unknown_person_points,
            cfg.unknown_person_points + (n_unknown - 1) * cfg.extra_unknown_person_points,
        )
        detail = (
            f"{plural(n_unknown, 'person')} not enrolled"
            if n_known == 0
            else f"{plural(n_unknown, 'person')} not enrolled (with {', '.join(known)})"
        )
        yield Factor("unknown_person", pts, detail)
    if n_known and not n_unknown:
        yield Factor("known_person", cfg.known_person_points, f"enrolled: {', '.join(known)}")
    elif n_known:
        yield Factor("known_person", cfg.partly_known_points, f"also enrolled: {', '.join(known)}")


def _rule_cross_camera(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """An unknown person also seen on other cameras recently is moving around the property.

    Only calibrated matches count (faces, and bodies from an embedder whose threshold keeps
    false matches at or below 1 %): a weak body match is left to the LLM as context.
    """
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
    """Night raises the weight of a person or vehicle; an empty or pets-only night doesn't."""
    hour = ctx.timestamp.hour
    if not cfg.is_night(hour):
        return
    if ctx.person_count == 0:
        return
    yield Factor("night", cfg.night_points, f"time {ctx.timestamp:%H:%M} is night")


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
    """Someone staying in view across recent frames (dwell), not just passing by."""
    dwell, frames = dwell_seconds(ctx, cfg)
    if dwell >= cfg.long_loiter_seconds:
        pts = cfg.long_loiter_points
    elif dwell >= cfg.loiter_seconds:
        pts = cfg.loiter_points
    else:
        return
    yield Factor(
        "loitering",
        pts,
        f"persons in view for {format_duration(dwell)} across {frames} frames",
    )


def _rule_posture(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """Fallen/lying persons (possible emergency), climbing, crouching: worst posture counts."""
    scored = [
        (cfg.posture_points.get(p.posture.lower(), 0), p)
        for p in ctx.enrichments_of(Posture)
        if p.confidence >= cfg.posture_min_confidence
    ]
    scored = [(pts, p) for pts, p in scored if pts]
    if not scored:
        return
    pts, p = max(scored, key=lambda x: (x[0], x[1].confidence))
    yield Factor(
        f"posture_{p.posture.lower()}",
        pts,
        f"person {p.posture.lower()} (confidence {round(p.confidence * 100)}%)",
    )


def _rule_vehicles(ctx: SceneContext, cfg: RuleConfig) -> Iterable[Factor]:
    """Vehicles in view: a little at day, more at night (nobody expects a car at 3 am)."""
    vehicles = ctx.objects_in("vehicle")
    if not vehicles:
        return
    night = cfg.is_night(ctx.timestamp.hour)
    pts = cfg.vehicle_night_points if night else cfg.vehicle_points
    desc = _describe_classes(vehicles)
    kinds = sorted({v.vehicle_type for v in ctx.enrichments_of(VehicleKind)})
    if kinds:
        desc += f" ({', '.join(kinds)})"
        pts += max((cfg.vehicle_type_points.get(k, 0) for k in kinds), key=abs, default=0)
    yield Factor("vehicle", pts, f"{desc} in view{' at night' if night else ''}")


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
    """Per-zone weights (backyard more than driveway), only when someone is there."""
    if ctx.zone is None or ctx.person_count == 0:
        return
    pts = cfg.zone_points.get(ctx.zone.lower(), 0)
    if pts:
        yield Factor("zone", pts, f"zone {ctx.zone}")


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
