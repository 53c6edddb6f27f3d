"""Per-camera calibration: what the user's feedback on past events teaches about new ones.

A camera that keeps raising the same benign alarm (the neighbour walking the dog past the gate
at 7 am) should quiet down once the user has said so a few times, without anyone writing a
rule for it. The user's verdicts (``false_alarm`` / ``confirmed``, stored per event by
:mod:`addon_server.store`) are matched against a new scene by what the rules saw: the same
camera, an hour of day within :attr:`Calibration.hour_window`, the same set of rule factor
names, and the same look (:func:`appearance`: the set of detector classes in view, so the
neighbour's cat dismissed every morning does not quiet a dog, nor a car a truck). Each
similar false alarm damps the new event by :attr:`Calibration.points_per_event`, up to
:attr:`Calibration.max_points`, as one named factor that says how many events stand behind
it; one similar ``confirmed`` verdict cancels the damping (a real incident outweighs any number
of dismissals), and withdrawing a verdict undoes its effect on the next event.

Calibration cannot hide a real threat: it never applies when the rules saw a threat (weapon,
fire, smoke), a fallen or lying person, or an unknown person at night with a score already in
the high band (and a precedent must have fired the very same factors, so a dismissed threat
event never damps anything but another threat event, which the guard keeps undamped).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from .levels import BANDS, RiskLevel, clamp_score
from .risk import LLM_ADJUSTMENT
from .rules import Factor, RuleResult, plural

__all__ = [
    "CALIBRATION_FACTOR",
    "Calibration",
    "FeedbackRecord",
    "Verdict",
    "appearance",
    "calibrate",
    "signature",
]

CALIBRATION_FACTOR = "calibration"
"""The factor's name in an event's ``factors``."""

_PROTECTED_PREFIXES = ("threat_",)
_PROTECTED_FACTORS = frozenset({"posture_fallen", "posture_lying"})
_HIGH_BOUND = next(bound for bound, level in BANDS if level is RiskLevel.HIGH)


class Verdict(StrEnum):
    """The user's word on one event."""

    FALSE_ALARM = "false_alarm"
    CONFIRMED = "confirmed"


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One stored verdict, with what calibration compares: when the event was, what fired."""

    verdict: Verdict
    event_ts: float
    factors: frozenset[str]
    appearance: frozenset[str] | None = None
    """What the event showed (:func:`appearance`); None for a verdict stored before looks were
    kept, which is then compared by camera, hours and factors only, as it was when given."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """How strongly feedback damps: points per similar false alarm, the cap, the hour window."""

    points_per_event: int = 5
    max_points: int = 20
    hour_window: int = 2


def signature(names: Iterable[str]) -> frozenset[str]:
    """The rule factor names of an event: what two events must share to be "similar"."""
    return frozenset(n for n in names if n not in (CALIBRATION_FACTOR, LLM_ADJUSTMENT))


def appearance(classes: Iterable[str]) -> frozenset[str]:
    """What an event looked like, as calibration compares it: the detector classes in view.

    The class is the finest label both sides of the comparison have: a new scene knows its
    detections, and a stored event keeps them in its document (``detections[].class``) long
    after its pixels are gone. Counts are left out (``group`` among the factors says that).
    """
    return frozenset(classes)


def _protected(names: Iterable[str]) -> bool:
    return any(n in _PROTECTED_FACTORS or n.startswith(_PROTECTED_PREFIXES) for n in names)


def _utc_hour(ts: float) -> int:
    return datetime.fromtimestamp(ts, UTC).hour


def _hours_apart(a: int, b: int) -> int:
    """Distance on the 24-hour clock (23 h and 1 h are 2 hours apart)."""
    d = abs(a - b) % 24
    return min(d, 24 - d)


def threat_guard(rules: RuleResult) -> str | None:
    """Why calibration must not touch this verdict, or ``None`` when it may."""
    names = {f.name for f in rules.factors}
    if _protected(names):
        return "a threat or a fall is in view"
    if {"unknown_person", "night"} <= names and rules.score >= _HIGH_BOUND:
        return "an unknown person at night"
    return None


def calibrate(
    rules: RuleResult,
    ts: float,
    feedback: Sequence[FeedbackRecord],
    settings: Calibration | None = None,
    looks: frozenset[str] | None = None,
) -> RuleResult:
    """The rule verdict with a ``calibration`` factor added when feedback says it is benign.

    ``feedback`` is this camera's stored verdicts; ``ts`` the new event's Unix time (hours are
    compared in UTC on both sides, so the camera's offset cancels out); ``looks`` the new
    event's :func:`appearance` (None: not compared).
    """
    settings = settings or Calibration()
    names = signature(f.name for f in rules.factors)
    if not names or not feedback or threat_guard(rules) is not None:
        return rules
    hour = _utc_hour(ts)
    similar = [
        record
        for record in feedback
        if record.factors == names
        and (looks is None or record.appearance is None or record.appearance == looks)
        and _hours_apart(_utc_hour(record.event_ts), hour) <= settings.hour_window
    ]
    if any(r.verdict is Verdict.CONFIRMED for r in similar):
        return rules
    count = sum(1 for r in similar if r.verdict is Verdict.FALSE_ALARM)
    points = min(settings.max_points, settings.points_per_event * count)
    if points <= 0:
        return rules
    factor = Factor(
        CALIBRATION_FACTOR,
        -points,
        f"{plural(count, 'similar event')} marked not a threat",
    )
    factors = (*rules.factors, factor)
    return RuleResult(score=clamp_score(sum(f.points for f in factors)), factors=factors)
