"""Whether the LLM is asked about a scene, and why: the one owner of that decision.

The LLM costs seconds on a CPU and a small model moves a score by a bounded blend
(:mod:`.risk`), so asking it about a scene the rules score 5 or 95 cannot change the band a
user sees. It is asked where it can matter:

* the rule score lies within ``margin`` points of a band boundary (the boundaries are the
  bands of :mod:`.levels`, never restated here), where the blend can move the level;
* the enrichments disagree with each other or with the detector — a reading the rules add up
  without weighing one against the other (a household pet and a weapon in the same frame; a
  fall read on a person the detector is unsure of; a weapon the threat model itself doubts);
* or always / never, by ``reasoning.llm_policy``.

A request's ``use_llm=false`` and a disabled LLM still mean never. Every event carries the
:class:`LLMDecision` as ``llm_decision``, so a user can tell "the model was not needed" from
"the model was off" from "the model was asked".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .context import Animal, Posture, SceneContext, Threat
from .levels import BANDS

__all__ = [
    "DEFAULT_MARGIN",
    "UNSURE_CONFIDENCE",
    "GateReason",
    "LLMDecision",
    "LLMPolicy",
    "decide",
    "disagreements",
    "nearest_boundary",
]

DEFAULT_MARGIN = 5
"""Points either side of a band boundary within which the LLM is asked (policy ``auto``).

The default blend (0.6 rules : 0.4 model, at most 15 points down) moves a score by up to
~15 points, but a rule score 5 points from a boundary is where one factor more or less would
have flipped the band: beyond that the model would have to disagree wildly to change it."""

UNSURE_CONFIDENCE = 0.5
"""Below this a detection or a threat reading is "unsure" for the disagreement checks."""

_FALLEN = frozenset({"fallen", "lying"})


class LLMPolicy(StrEnum):
    """``reasoning.llm_policy``: when the LLM is asked (``auto``: where it can matter)."""

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class GateReason(StrEnum):
    """The ``llm_decision.reason`` codes (contract: shared with Home Assistant and clients)."""

    NEAR_BOUNDARY = "near_boundary"
    ENRICHMENTS_DISAGREE = "enrichments_disagree"
    POLICY_ALWAYS = "policy_always"
    POLICY_NEVER = "policy_never"
    CLEAR_VERDICT = "clear_verdict"
    LLM_DISABLED = "llm_disabled"
    REQUEST_OFF = "request_off"


@dataclass(frozen=True, slots=True)
class LLMDecision:
    """Whether the LLM is asked about one event, a reason code and the reason in words."""

    asked: bool
    reason: GateReason
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"asked": self.asked, "reason": str(self.reason), "detail": self.detail}


def nearest_boundary(score: int, margin: int) -> int | None:
    """The band boundary (lower bound of a band above the lowest) within ``margin`` of
    ``score``, the closest one; ``None`` when the score is clear of every boundary."""
    bounds = [bound for bound, _ in BANDS[1:] if abs(score - bound) <= margin]
    return min(bounds, key=lambda bound: abs(score - bound)) if bounds else None


def disagreements(context: SceneContext) -> list[str]:
    """The enrichments' readings that contradict each other or the detector, in words."""
    return list(_disagreements(context))


def _disagreements(context: SceneContext) -> Iterator[str]:
    threats = context.enrichments_of(Threat)
    pets = [a for a in context.enrichments_of(Animal) if a.household]
    if threats and pets:
        yield (
            f"the pet classifier saw a household {pets[0].species} but the threat detector "
            f"fired ({threats[0].label})"
        )
    for posture in context.enrichments_of(Posture):
        index = posture.object_index
        if posture.posture not in _FALLEN or index is None:
            continue
        person = context.objects[index]
        if person.confidence < UNSURE_CONFIDENCE:
            yield (
                f"posture says {posture.posture} but the detector is unsure of that person "
                f"({round(person.confidence * 100)}%)"
            )
    for threat in threats:
        if threat.confidence < UNSURE_CONFIDENCE:
            yield (
                f"the threat detector reads {threat.label} at only "
                f"{round(threat.confidence * 100)}%"
            )


def decide(
    score: int,
    context: SceneContext,
    *,
    policy: LLMPolicy = LLMPolicy.AUTO,
    margin: int = DEFAULT_MARGIN,
    llm_enabled: bool = True,
    use_llm: bool = True,
) -> LLMDecision:
    """Whether to ask the LLM about a scene whose (calibrated) rule score is ``score``.

    The order is the order of authority: the request, the configuration (LLM off, policy),
    then the scene itself.
    """
    if not use_llm:
        return LLMDecision(False, GateReason.REQUEST_OFF, "the request asked for rules only")
    if not llm_enabled:
        return LLMDecision(False, GateReason.LLM_DISABLED, "the LLM is disabled (llm.mode)")
    if policy is LLMPolicy.NEVER:
        return LLMDecision(False, GateReason.POLICY_NEVER, "reasoning.llm_policy is never")
    if policy is LLMPolicy.ALWAYS:
        return LLMDecision(True, GateReason.POLICY_ALWAYS, "reasoning.llm_policy is always")
    bound = nearest_boundary(score, margin)
    if bound is not None:
        return LLMDecision(
            True,
            GateReason.NEAR_BOUNDARY,
            f"rule score {score} is within {margin} points of the band boundary {bound}",
        )
    found = disagreements(context)
    if found:
        return LLMDecision(True, GateReason.ENRICHMENTS_DISAGREE, "; ".join(found))
    return LLMDecision(
        False,
        GateReason.CLEAR_VERDICT,
        f"rule score {score} is more than {margin} points from every band boundary",
    )
