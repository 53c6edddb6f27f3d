"""The LLM gate: asked near a band boundary, when enrichments disagree, or by policy."""

from __future__ import annotations

import pytest

from addon_server.config import parse
from addon_server.reasoning.context import Animal, DetectedObject, Posture, SceneContext, Threat
from addon_server.reasoning.gate import (
    DEFAULT_MARGIN,
    GateReason,
    LLMPolicy,
    decide,
    disagreements,
    nearest_boundary,
)
from addon_server.reasoning.levels import BANDS
from addon_server.reasoning.reasoner import Reasoner
from addon_server.reasoning.settings import LLMMode, ReasoningSettings

from .reasoning_scenes import BBox, scene

BOUNDARIES = [bound for bound, _ in BANDS[1:]]


@pytest.mark.parametrize("bound", BOUNDARIES)
def test_a_score_near_any_band_boundary_asks_the_llm(bound: int) -> None:
    for score in (bound - DEFAULT_MARGIN, bound, bound + DEFAULT_MARGIN):
        decision = decide(score, scene("person"))
        assert decision.asked, score
        assert decision.reason is GateReason.NEAR_BOUNDARY
        assert str(bound) in decision.detail
    far = decide(bound - DEFAULT_MARGIN - 1, scene("person"), margin=DEFAULT_MARGIN)
    assert nearest_boundary(bound - DEFAULT_MARGIN - 1, DEFAULT_MARGIN) != bound
    if nearest_boundary(bound - DEFAULT_MARGIN - 1, DEFAULT_MARGIN) is None:
        assert (far.asked, far.reason) == (False, GateReason.CLEAR_VERDICT)


def test_a_clear_verdict_skips_the_llm_and_says_why() -> None:
    for score in (0, 10, 45, 72, 100):
        decision = decide(score, scene("person"))
        assert (decision.asked, decision.reason) == (False, GateReason.CLEAR_VERDICT), score
        assert f"rule score {score}" in decision.detail
        assert decision.as_json() == {
            "asked": False,
            "reason": "clear_verdict",
            "detail": decision.detail,
        }


def test_the_lowest_band_has_no_boundary_at_zero() -> None:
    assert nearest_boundary(0, DEFAULT_MARGIN) is None
    assert nearest_boundary(58, DEFAULT_MARGIN) == 60
    assert nearest_boundary(86, DEFAULT_MARGIN) == 85


def test_policy_and_request_override_the_scene() -> None:
    ctx = scene("person")
    assert decide(10, ctx, policy=LLMPolicy.ALWAYS).reason is GateReason.POLICY_ALWAYS
    assert decide(10, ctx, policy=LLMPolicy.ALWAYS).asked
    never = decide(60, ctx, policy=LLMPolicy.NEVER)
    assert (never.asked, never.reason) == (False, GateReason.POLICY_NEVER)
    off = decide(60, ctx, policy=LLMPolicy.ALWAYS, use_llm=False)
    assert (off.asked, off.reason) == (False, GateReason.REQUEST_OFF)
    disabled = decide(60, ctx, policy=LLMPolicy.ALWAYS, llm_enabled=False)
    assert (disabled.asked, disabled.reason) == (False, GateReason.LLM_DISABLED)


def _person(confidence: float) -> DetectedObject:
    return DetectedObject("person", confidence, BBox(10, 10, 100, 300), 1000, 1000)


def test_a_household_pet_and_a_weapon_disagree() -> None:
    pet = Animal(model="pets", confidence=0.9, species="dog", household=True)
    knife = Threat(model="threat_detector", confidence=0.9, label="knife")
    ctx = scene("dog", enrichments={"pets": [pet], "threat_detector": [knife]})
    decision = decide(10, ctx)
    assert (decision.asked, decision.reason) == (True, GateReason.ENRICHMENTS_DISAGREE)
    assert "household dog" in decision.detail and "knife" in decision.detail
    fox = Animal(model="pets", confidence=0.9, species="fox", household=False)
    assert not disagreements(scene("dog", enrichments={"pets": [fox], "threat_detector": [knife]}))
    assert not disagreements(scene("dog", enrichments={"pets": [pet]}))


def test_a_fall_on_an_unsure_person_disagrees() -> None:
    fallen = Posture(model="pose", confidence=0.8, posture="fallen", object_index=0)

    def ctx(person_confidence: float) -> SceneContext:
        return SceneContext(
            camera="garden",
            timestamp=scene().timestamp,
            objects=(_person(person_confidence),),
            enrichments={"pose": [fallen]},
        )

    assert disagreements(ctx(0.3)) == [
        "posture says fallen but the detector is unsure of that person (30%)"
    ]
    assert disagreements(ctx(0.9)) == []


def test_a_weak_threat_reading_disagrees() -> None:
    weak = Threat(model="threat_detector", confidence=0.35, label="gun")
    strong = Threat(model="threat_detector", confidence=0.95, label="gun")
    assert disagreements(scene("person", enrichments={"threat_detector": [weak]})) == [
        "the threat detector reads gun at only 35%"
    ]
    assert disagreements(scene("person", enrichments={"threat_detector": [strong]})) == []


def test_llm_policy_is_configured_by_yaml_and_env() -> None:
    # Off by default: the embedded LLM adds misses on the evaluation set (issue 15's rule).
    assert parse({}, environ={}).reasoning.llm_policy is LLMPolicy.NEVER
    from_env = parse({}, environ={"LLM_POLICY": "auto"}).reasoning
    assert from_env.llm_policy is LLMPolicy.AUTO
    from_yaml = parse({"reasoning": {"llm_policy": "always", "llm_margin": 8}}, environ={})
    assert (from_yaml.reasoning.llm_policy, from_yaml.reasoning.llm_margin) == (
        LLMPolicy.ALWAYS,
        8,
    )
    with pytest.raises(Exception, match="llm_policy"):
        parse({"reasoning": {"llm_policy": "sometimes"}}, environ={})


def test_the_reasoner_splits_rules_from_the_llm() -> None:
    """Phase 1 is the rules' verdict with the gate's decision; the LLM is not touched."""
    reasoner = Reasoner(ReasoningSettings(mode=LLMMode.DISABLED))
    verdict = reasoner.rule_verdict(scene("person"))
    assert verdict.decision.reason is GateReason.LLM_DISABLED
    assert verdict.assessment.risk_score == verdict.rules.score
    assert verdict.assessment.rule_score == verdict.rules.score
    off = reasoner.rule_verdict(scene("person"), use_llm=False)
    assert off.decision.reason is GateReason.REQUEST_OFF
