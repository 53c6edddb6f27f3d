"""Calibration from feedback: similar benign events damp a camera; a real threat is never hidden."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from addon_server.reasoning.calibration import (
    CALIBRATION_FACTOR,
    FeedbackRecord,
    Verdict,
    appearance,
    calibrate,
    signature,
    threat_guard,
)
from addon_server.reasoning.context import HistoryPoint, Posture, SceneContext, Threat
from addon_server.reasoning.levels import RiskLevel, level_for
from addon_server.reasoning.reasoner import Reasoner
from addon_server.reasoning.rules import RuleEngine, RuleResult
from addon_server.reasoning.settings import LLMMode, ReasoningSettings

from .reasoning_scenes import DAY, NIGHT, scene

ENGINE = RuleEngine()


def records(
    ctx: SceneContext, n: int, verdict: Verdict = Verdict.FALSE_ALARM, shift_h: float = 0
) -> list[FeedbackRecord]:
    """``n`` verdicts on earlier events that looked like ``ctx`` (``shift_h`` hours apart)."""
    names = signature(f.name for f in ENGINE.evaluate(ctx).factors)
    ts = (ctx.timestamp + timedelta(hours=shift_h)).timestamp()
    return [FeedbackRecord(verdict, ts - 86400 * (i + 1), names) for i in range(n)]


def calibrated(ctx: SceneContext, feedback: list[FeedbackRecord]) -> RuleResult:
    return calibrate(ENGINE.evaluate(ctx), ctx.timestamp.timestamp(), feedback)


def damping(result: RuleResult) -> tuple[int, str] | None:
    found = [f for f in result.factors if f.name == CALIBRATION_FACTOR]
    return (found[0].points, found[0].detail) if found else None


@pytest.mark.parametrize(
    ("count", "points", "detail"),
    [
        (1, -5, "1 similar event marked not a threat"),
        (3, -15, "3 similar events marked not a threat"),
        (4, -20, "4 similar events marked not a threat"),
        (10, -20, "10 similar events marked not a threat"),  # capped
    ],
)
def test_damping_grows_with_the_similar_false_alarms_up_to_a_cap(
    count: int, points: int, detail: str
) -> None:
    ctx = scene("person", "person")  # the daily delivery: two unknown people by day
    plain = ENGINE.evaluate(ctx)
    result = calibrated(ctx, records(ctx, count))
    assert damping(result) == (points, detail)
    assert result.score == plain.score + points


def test_only_similar_events_count() -> None:
    ctx = scene("person")
    other_hours = records(ctx, 4, shift_h=3)
    other_factors = [
        FeedbackRecord(Verdict.FALSE_ALARM, r.event_ts, r.factors | {"vehicle"})
        for r in records(ctx, 4)
    ]
    assert damping(calibrated(ctx, other_hours + other_factors)) is None
    assert damping(calibrated(ctx, records(ctx, 2, shift_h=-2) + other_hours))[0] == -10  # type: ignore[index]
    assert damping(calibrated(scene(camera="yard"), records(ctx, 4))) is None  # nothing fired


def test_the_hour_window_wraps_around_midnight() -> None:
    ctx = scene("car", at=NIGHT.replace(hour=0, minute=30))
    assert damping(calibrated(ctx, records(ctx, 1, shift_h=-1.5)))[0] == -5  # type: ignore[index]


def test_a_confirmed_similar_event_cancels_the_damping() -> None:
    ctx = scene("person")
    feedback = records(ctx, 5) + records(ctx, 1, Verdict.CONFIRMED)
    assert damping(calibrated(ctx, feedback)) is None


def _gun(conf: float = 0.95) -> dict[str, list[Threat]]:
    return {"weapon-det": [Threat(model="weapon-det", confidence=conf, label="gun")]}


THREATS = [
    ("gun_by_day", scene("person", enrichments=_gun())),
    (
        "knife_at_night",
        scene(
            "person",
            at=NIGHT,
            enrichments={"t": [Threat(model="t", confidence=0.9, label="knife")]},
        ),
    ),
    (
        "fall",
        scene(
            "person",
            enrichments={"pose": [Posture(model="pose", confidence=0.9, posture="fallen")]},
        ),
    ),
    (
        "unknown_lingering_at_night",
        scene(
            "person",
            at=NIGHT,
            history=[HistoryPoint(seconds_ago=s, person_count=1) for s in (60, 120, 180, 240)],
        ),
    ),
]


@pytest.mark.parametrize(("ctx"), [c for _, c in THREATS], ids=[n for n, _ in THREATS])
async def test_calibration_cannot_hide_a_real_threat(ctx: SceneContext) -> None:
    """Ten "not a threat" verdicts on the very same pattern leave a threat's level alone."""
    reasoner = Reasoner(ReasoningSettings(mode=LLMMode.DISABLED))
    plain = await reasoner.assess(ctx)
    assert plain.risk_level in (RiskLevel.HIGH, RiskLevel.CRITICAL)
    after = await reasoner.assess(ctx, feedback=records(ctx, 10))
    assert CALIBRATION_FACTOR not in [f.name for f in after.factors]
    assert (after.risk_score, after.risk_level) == (plain.risk_score, plain.risk_level)


async def test_the_factor_shows_in_the_event_like_the_others() -> None:
    ctx = scene("person", "person", at=DAY)
    reasoner = Reasoner(ReasoningSettings(mode=LLMMode.DISABLED))
    plain = await reasoner.assess(ctx)
    after = await reasoner.assess(ctx, feedback=records(ctx, 3))
    factor = next(f for f in after.factors if f.name == CALIBRATION_FACTOR)
    assert factor.as_json() == {
        "name": "calibration",
        "points": -15,
        "detail": "3 similar events marked not a threat",
    }
    assert after.rule_score == after.risk_score == plain.risk_score - 15
    assert after.risk_level is level_for(after.risk_score)
    assert "calibration -15" in after.reasoning


def test_signature_ignores_what_the_rules_did_not_see() -> None:
    assert signature(["night", "llm_adjustment", "calibration", "person_present"]) == {
        "night",
        "person_present",
    }


def test_the_evaluation_set_threats_stay_high_under_ten_dismissals() -> None:
    """Every alarm of the risk evaluation set with a weapon, fire, a fall or an unknown person
    at night keeps its band when its very pattern was marked "not a threat" ten times."""
    from benchmarks.risk_eval import load_set

    guarded = 0
    for s in load_set().scenarios:
        plain = ENGINE.evaluate(s.context)
        if level_for(plain.score) not in (RiskLevel.HIGH, RiskLevel.CRITICAL):
            continue
        if threat_guard(plain) is None:
            continue
        guarded += 1
        after = calibrated(s.context, records(s.context, 10))
        assert damping(after) is None, s.id
        assert level_for(after.score) is level_for(plain.score), s.id
    assert guarded >= 10, "the set has weapons, fires, falls and night intruders to check"


def looking_like(ctx: SceneContext, n: int, looks: frozenset[str] | None) -> list[FeedbackRecord]:
    """``records`` whose events showed ``looks`` (None: a verdict stored before looks were)."""
    return [FeedbackRecord(r.verdict, r.event_ts, r.factors, looks) for r in records(ctx, n)]


@pytest.mark.parametrize(
    ("dismissed", "same", "different", "at"),
    [
        ("cat", "cat", "dog", DAY),
        # a vehicle alone scores nothing by day: the neighbour's car parked at 00:30 does
        ("car", "car", "truck", NIGHT.replace(hour=0, minute=30)),
        ("dog", "dog", "bird", DAY),
    ],
)
async def test_a_similar_looking_false_alarm_is_damped_and_a_different_looking_one_is_not(
    dismissed: str, same: str, different: str, at: datetime
) -> None:
    """The neighbour's cat, dismissed four mornings, quiets the cat, not a dog at that hour."""
    ctx, other = scene(dismissed, at=at), scene(different, at=at)
    names = signature(f.name for f in ENGINE.evaluate(ctx).factors)
    assert names == signature(f.name for f in ENGINE.evaluate(other).factors)  # same rules
    feedback = looking_like(ctx, 4, appearance([dismissed]))
    reasoner = Reasoner(ReasoningSettings(mode=LLMMode.DISABLED))
    plain = await reasoner.assess(other)
    unmoved = await reasoner.assess(other, feedback=feedback)
    assert CALIBRATION_FACTOR not in [f.name for f in unmoved.factors]
    assert unmoved.risk_score == plain.risk_score
    damped = await reasoner.assess(scene(same, at=at), feedback=feedback)
    factor = next(f for f in damped.factors if f.name == CALIBRATION_FACTOR)
    assert (factor.points, factor.detail) == (-20, "4 similar events marked not a threat")


def test_looks_are_the_set_of_classes_in_view() -> None:
    assert appearance(["person", "car", "person"]) == {"person", "car"}
    ctx = scene("person", "car")
    both = looking_like(ctx, 2, appearance(["person", "car"]))
    only_people = looking_like(ctx, 2, appearance(["person"]))
    looks = appearance(o.class_name for o in ctx.objects)
    assert damping(calibrate(ENGINE.evaluate(ctx), ctx.timestamp.timestamp(), both, looks=looks))
    assert not damping(
        calibrate(ENGINE.evaluate(ctx), ctx.timestamp.timestamp(), only_people, looks=looks)
    )


def test_a_verdict_stored_before_looks_were_kept_still_counts() -> None:
    """Reversible and compatible: old verdicts keep the effect they had."""
    ctx = scene("cat")
    looks = appearance(["dog"])
    result = calibrate(
        ENGINE.evaluate(ctx), ctx.timestamp.timestamp(), looking_like(ctx, 2, None), looks=looks
    )
    assert damping(result) == (-10, "2 similar events marked not a threat")
