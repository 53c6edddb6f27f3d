"""Bands, the rules+LLM blend, and the property that level and score always agree."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addon_server.reasoning.context import (
    BBox,
    DetectedObject,
    HistoryPoint,
    PersonSighting,
    Posture,
    SceneContext,
    Sighting,
    Threat,
)
from addon_server.reasoning.llm import LLMAnswer, LLMError, parse_answer
from addon_server.reasoning.risk import (
    Assessment,
    BlendWeights,
    LLMStatus,
    RiskLevel,
    SummarySource,
    blend,
    clamp_score,
    level_for,
)
from addon_server.reasoning.rules import Factor, RuleEngine, RuleResult

from .reasoning_scenes import scene


def examples(n: int) -> settings:
    """Hypothesis settings for ``n`` examples that no machine's speed can fail: no per-example
    deadline, and no health check on how fast examples are generated."""
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def band(score: int) -> str:
    """The spec's bands written out independently of risk.py."""
    if 0 <= score <= 29:
        return "low"
    if 30 <= score <= 59:
        return "medium"
    if 60 <= score <= 84:
        return "high"
    if 85 <= score <= 100:
        return "critical"
    raise AssertionError(f"score {score} outside 0-100")


@pytest.mark.parametrize(
    ("score", "level"),
    [
        (0, "low"),
        (29, "low"),
        (30, "medium"),
        (59, "medium"),
        (60, "high"),
        (84, "high"),
        (85, "critical"),
        (100, "critical"),
        (-5, "low"),
        (250, "critical"),
    ],
)
def test_level_for_band_edges(score: int, level: str) -> None:
    assert level_for(score).value == level


def test_clamp_score_handles_garbage_numbers() -> None:
    assert clamp_score(float("nan")) == 0
    assert clamp_score(float("inf")) == 100
    assert clamp_score(float("-inf")) == 0
    assert clamp_score(42.5) == 42  # banker's rounding is fine; in range is what matters
    assert clamp_score(1e300) == 100


RULES_40 = RuleResult(40, (Factor("unknown_person", 25, "1 person"), Factor("x", 15, "y")))
RULES_95 = RuleResult(95, (Factor("threat_gun", 95, "gun"),))


def answer(score: int, level: str | None = "low", summary: str = "s") -> LLMAnswer:
    return LLMAnswer(risk_score=score, risk_level=level, summary=summary, reasoning="r")


def test_disabled_is_rules_only() -> None:
    a = blend(RULES_40, answer(90), BlendWeights(), llm_status=LLMStatus.DISABLED)
    assert (a.risk_score, a.risk_level, a.llm_status) == (40, RiskLevel.MEDIUM, LLMStatus.DISABLED)
    assert a.factors == RULES_40.factors
    assert a.llm_error is None


def test_fallback_is_rules_only_and_keeps_the_error() -> None:
    a = blend(
        RULES_40, None, BlendWeights(), llm_status=LLMStatus.FALLBACK, llm_error="timeout: 20s"
    )
    assert (a.risk_score, a.llm_status, a.llm_error) == (40, LLMStatus.FALLBACK, "timeout: 20s")
    assert "unknown_person +25" in a.reasoning
    assert a.summary.startswith("Medium risk")


def test_ok_blends_and_explains_the_move() -> None:
    a = blend(
        RULES_40, answer(90, "low"), BlendWeights(rules=0.6, llm=0.4), llm_status=LLMStatus.OK
    )
    assert a.risk_score == 60  # 0.6*40 + 0.4*90
    assert a.risk_level is RiskLevel.HIGH  # from the score, not the model's "low"
    assert a.llm_level == "low"
    assert a.llm_score == 90
    adj = a.factors[-1]
    assert (adj.name, adj.points) == ("llm_adjustment", 20)
    # The model's 90 is "critical", the event "high": its words don't describe our event.
    assert a.summary_source is SummarySource.RULES
    assert a.summary_rejected == "the model scored 90 (critical) but the event is high"
    assert a.summary.startswith("High risk: ")
    assert a.reasoning.endswith(f"The model's text was not used: {a.summary_rejected}.")
    assert a.as_json()["summary_source"] == "rules"


def test_model_text_is_used_when_its_score_lands_in_the_final_band() -> None:
    a = blend(RULES_40, answer(50, "high"), BlendWeights(rules=1, llm=1), llm_status=LLMStatus.OK)
    assert a.risk_score == 45
    assert a.risk_level is RiskLevel.MEDIUM
    assert a.summary_source is SummarySource.LLM
    assert a.summary_rejected is None
    assert a.summary == "s"
    assert a.reasoning == "r"


def test_rules_hold_the_line_against_a_model_that_says_zero() -> None:
    a = blend(RULES_95, answer(0), BlendWeights(rules=0.1, llm=0.9), llm_status=LLMStatus.OK)
    assert a.risk_score == 80  # floor: 95 - max_llm_decrease(15)
    assert a.factors[-1].points == -15


def test_weights_are_relative_and_configurable() -> None:
    w = BlendWeights.from_mapping({"rules": 3, "llm": 1, "max_llm_decrease": 100})
    a = blend(RULES_40, answer(0), w, llm_status=LLMStatus.OK)
    assert a.risk_score == 30
    with pytest.raises(ValueError, match="weights"):
        BlendWeights(rules=0, llm=0)


def test_empty_llm_text_falls_back_to_rules_text() -> None:
    a = blend(RULES_40, answer(40, summary="  "), BlendWeights(), llm_status=LLMStatus.OK)
    assert a.summary.startswith("Medium risk")
    assert a.reasoning == "r"
    assert not any(f.name == "llm_adjustment" for f in a.factors)  # no move, no factor


def test_assessment_refuses_a_mismatched_level() -> None:
    with pytest.raises(ValueError, match="does not match"):
        Assessment(
            risk_score=20,
            risk_level=RiskLevel.CRITICAL,
            summary="",
            reasoning="",
            factors=(),
            llm_status=LLMStatus.OK,
            rule_score=20,
        )


# --- properties ------------------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_any = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
answer_like = st.fixed_dictionaries(
    {},
    optional={
        "risk_score": json_any,
        "risk_level": st.one_of(
            st.sampled_from(["low", "HIGH", "critical ", "severe", ""]), json_any
        ),
        "summary": json_any,
        "reasoning": json_any,
        "factors": st.lists(
            st.one_of(
                json_any,
                st.fixed_dictionaries({"name": json_any, "points": json_any, "detail": json_any}),
            ),
            max_size=6,
        ),
    },
)
garbage_content = st.one_of(
    st.text(max_size=80),
    answer_like.map(lambda d: json.dumps(d, allow_nan=True)),
    answer_like.map(lambda d: "```json\n" + json.dumps(d) + "\n```"),
    json_any.map(lambda v: json.dumps(v, allow_nan=True)),
    st.binary(max_size=40),
)
weights = st.builds(
    BlendWeights,
    rules=st.floats(min_value=0, max_value=10),
    llm=st.floats(min_value=0.001, max_value=10),
    max_llm_decrease=st.integers(min_value=0, max_value=100),
)
rule_results = st.builds(
    lambda pts: RuleResult(
        max(0, min(100, sum(pts))), tuple(Factor(f"f{i}", p, "d") for i, p in enumerate(pts))
    ),
    st.lists(st.integers(min_value=-100, max_value=150), max_size=6),
)


def check(a: Assessment, rules: RuleResult, w: BlendWeights) -> None:
    assert isinstance(a.risk_score, int)
    assert a.risk_level.value == band(a.risk_score)
    assert a.risk_level is level_for(a.risk_score)
    assert a.risk_score >= min(rules.score, 100) - w.max_llm_decrease
    assert a.summary.strip()
    assert a.reasoning.strip()
    json.dumps(a.as_json())  # the event part always serialises


@examples(250)
@given(rules=rule_results, content=garbage_content, w=weights, status=st.sampled_from(LLMStatus))
def test_level_and_score_always_agree_for_any_llm_answer(
    rules: RuleResult, content: str | bytes, w: BlendWeights, status: LLMStatus
) -> None:
    try:
        parsed: LLMAnswer | None = parse_answer(content)
        error = None
    except LLMError as exc:
        parsed, error, status = None, str(exc), LLMStatus.FALLBACK
    a = blend(rules, parsed, w, llm_status=status, llm_error=error)
    check(a, rules, w)
    if parsed is not None:
        assert 0 <= parsed.risk_score <= 100
        assert parsed.risk_level in (None, "low", "medium", "high", "critical")


@examples(300)
@given(
    rules=rule_results,
    score=st.integers(min_value=-(10**12), max_value=10**12),
    level=st.one_of(st.none(), st.text(max_size=10)),
    w=weights,
)
def test_level_and_score_agree_for_any_direct_answer(
    rules: RuleResult, score: int, level: str | None, w: BlendWeights
) -> None:
    a = blend(rules, answer(score, level), w, llm_status=LLMStatus.OK)
    check(a, rules, w)


tz = st.integers(min_value=-12 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
classes = st.sampled_from(
    ["person", "car", "truck", "dog", "cat", "bird", "bicycle", "bus", "kite"]
)
unit = st.floats(min_value=0, max_value=1)


@st.composite
def scenes(draw: st.DrawFn) -> SceneContext:
    objs = tuple(
        DetectedObject(
            c, draw(unit), BBox(0, 0, draw(st.floats(0, 2000)), draw(st.floats(0, 2000))), 640, 480
        )
        for c in draw(st.lists(classes, max_size=8))
    )
    enrich: dict[str, list[Any]] = {
        "t": [
            Threat(
                model="t",
                confidence=draw(unit),
                label=draw(st.sampled_from(["gun", "knife", "fire", "odd"])),
            )
            for _ in range(draw(st.integers(0, 2)))
        ],
        "p": [
            Posture(
                model="p",
                confidence=draw(unit),
                posture=draw(st.sampled_from(["fallen", "lying", "standing"])),
            )
            for _ in range(draw(st.integers(0, 2)))
        ],
    }
    persons = tuple(
        PersonSighting(
            draw(st.one_of(st.none(), st.sampled_from(["alice", "bob"]))),
            draw(st.floats(-1, 1)),
            tuple(
                Sighting(draw(st.sampled_from(["garage", "front_door"])), draw(st.floats(0, 5000)))
                for _ in range(draw(st.integers(0, 2)))
            ),
        )
        for _ in range(draw(st.integers(0, 3)))
    )
    history = tuple(
        HistoryPoint(draw(st.floats(0, 1000)), draw(st.integers(0, 5)))
        for _ in range(draw(st.integers(0, 6)))
    )
    when = draw(
        st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=tz)
    )
    return SceneContext(
        "cam",
        when,
        objs,
        zone=draw(st.one_of(st.none(), st.text(max_size=5))),
        enrichments=enrich,
        persons=persons,
        history=history,
    )


@examples(150)
@given(ctx=scenes(), llm=st.one_of(st.none(), st.integers(-50, 150)), w=weights)
def test_any_scene_gives_a_consistent_assessment(
    ctx: SceneContext, llm: int | None, w: BlendWeights
) -> None:
    rules = RuleEngine().evaluate(ctx)
    assert 0 <= rules.score <= 100
    status = LLMStatus.OK if llm is not None else LLMStatus.FALLBACK
    a = blend(rules, None if llm is None else answer(llm), w, llm_status=status)
    check(a, rules, w)


def test_scene_helper_smoke() -> None:
    # The shared builder makes valid scenes (guards the fixtures the other tests rely on).
    assert scene("person", "car").counts() == {"person": 1, "vehicle": 1, "animal": 0}
