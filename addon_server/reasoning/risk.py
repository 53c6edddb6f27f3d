"""The blend of the rule score with the LLM's score into the event's risk.

The levels, their bands and the clamp are defined once in :mod:`.levels` (re-exported here
for the callers that already import them from this module).

Two invariants live here and nowhere else:

* the level is *always* computed from the final score with :func:`level_for`. Small models
  (SmolLM2-135M) often answer ``risk_score: 80, risk_level: "low"``; we never trust the model's
  level, so an event can't say "critical" with a score of 20, and Home Assistant automations keyed
  on either field agree;
* the rules hold the line: the LLM moves the rule score only by a weighted blend, and it can pull
  a score *down* by at most ``max_llm_decrease`` points, so a confused model can't talk a detected
  gun down to "low". With the LLM disabled or failing, the rule score is the final score.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .levels import BANDS, RiskLevel, clamp_score, level_for
from .rules import Factor, RuleResult

if TYPE_CHECKING:
    from .llm import LLMAnswer

__all__ = [
    "BANDS",
    "LLM_ADJUSTMENT",
    "Assessment",
    "BlendWeights",
    "LLMStatus",
    "RiskLevel",
    "SummarySource",
    "blend",
    "clamp_score",
    "level_for",
]


LLM_ADJUSTMENT = "llm_adjustment"
"""The factor by which the blend moved the rule score (not something the rules saw)."""


class SummarySource(StrEnum):
    """Whose words the event's ``summary`` and ``reasoning`` are."""

    LLM = "llm"
    RULES = "rules"


class LLMStatus(StrEnum):
    """Whether the LLM contributed: ``fallback`` means it should have and couldn't."""

    OK = "ok"
    FALLBACK = "fallback"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class BlendWeights:
    """How much each opinion counts when the LLM answered, and how far it may pull down.

    Weights are relative (normalised by their sum), so ``rules: 3, llm: 1`` is the same as
    ``0.75 / 0.25``. ``max_llm_decrease`` bounds how far below the rule score the blend may
    land; raising the score has no bound because a false alarm is cheaper than a missed one.
    """

    rules: float = 0.6
    llm: float = 0.4
    max_llm_decrease: int = 15

    def __post_init__(self) -> None:
        if self.rules < 0 or self.llm < 0 or self.rules + self.llm <= 0:
            raise ValueError("blend weights must be >= 0 and not both 0")
        if self.max_llm_decrease < 0:
            raise ValueError("max_llm_decrease must be >= 0")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> BlendWeights:
        """From a validated config section (keys: rules, llm, max_llm_decrease)."""
        default = cls()
        return cls(
            rules=float(values.get("rules", default.rules)),
            llm=float(values.get("llm", default.llm)),
            max_llm_decrease=int(values.get("max_llm_decrease", default.max_llm_decrease)),
        )


@dataclass(frozen=True, slots=True)
class Assessment:
    """The reasoning stage's result, i.e. the risk part of an event.

    ``factors`` are the rule factors plus, when the LLM moved the score, one ``llm_adjustment``
    factor whose points are that move (final score minus rule score), so the user sees how much
    came from the model and how much from each rule. The model's own factor list is
    kept apart in ``llm_factors`` because a small model's names and details are free text.
    ``summary_source`` says whether summary and reasoning are the model's words or the rules';
    ``summary_rejected`` why the model's were not used although it answered.
    """

    risk_score: int
    risk_level: RiskLevel
    summary: str
    reasoning: str
    factors: tuple[Factor, ...]
    llm_status: LLMStatus
    rule_score: int
    llm_score: int | None = None
    llm_level: str | None = None
    llm_factors: tuple[Factor, ...] = ()
    llm_error: str | None = None
    llm_raw: str | None = None
    summary_source: SummarySource = SummarySource.RULES
    summary_rejected: str | None = None
    model: str | None = None
    timings_ms: Mapping[str, float] | None = None
    missing_stages: tuple[str, ...] = ()
    """Stages that gave no answer (``llm`` when the Ray LLM stage is down): the event's
    ``missing_stages``, not one of the risk fields :meth:`as_json` writes."""

    def __post_init__(self) -> None:
        # The one invariant an event must never break, checked where it is built.
        if level_for(self.risk_score) is not self.risk_level:
            raise ValueError(f"level {self.risk_level} does not match score {self.risk_score}")

    @property
    def llm_text_used(self) -> bool:
        """True when summary and reasoning are the model's words."""
        return self.summary_source is SummarySource.LLM

    def as_json(self) -> dict[str, Any]:
        """The event fields this stage owns (risk_score, risk_level, summary, ...)."""
        return {
            "risk_score": self.risk_score,
            "risk_level": str(self.risk_level),
            "summary": self.summary,
            "reasoning": self.reasoning,
            "factors": [f.as_json() for f in self.factors],
            "llm_status": str(self.llm_status),
            "summary_source": str(self.summary_source),
            "summary_rejected": self.summary_rejected,
        }


def rules_summary(rules: RuleResult, counts: str, level: RiskLevel | None = None) -> str:
    """A one-line summary from the rules' factors, headed by the event's (final) level."""
    level = level or level_for(rules.score)
    if not rules.factors:
        return f"{counts}: nothing of concern" if counts else "Nothing of concern in view"
    top = "; ".join(f.detail for f in rules.factors[:2])
    return f"{level.value.capitalize()} risk: {top}"


def rules_reasoning(rules: RuleResult) -> str:
    """The rules' arithmetic in words, e.g. ``unknown_person +25, night +20 = 45``."""
    if not rules.factors:
        return "No rule fired; score 0."
    parts = ", ".join(f"{f.name} {f.points:+d}" for f in rules.factors)
    total = rules.raw_total
    clamp = "" if total == rules.score else f" (clamped to {rules.score})"
    return f"Rules: {parts} = {total}{clamp}."


def blend(
    rules: RuleResult,
    answer: LLMAnswer | None,
    weights: BlendWeights,
    *,
    llm_status: LLMStatus,
    counts: str = "",
    llm_error: str | None = None,
    text_rejected: str | None = None,
    model: str | None = None,
    timings_ms: Mapping[str, float] | None = None,
) -> Assessment:
    """Combine the rule verdict with the LLM's answer (if any) into the final assessment.

    ``answer`` is used only with ``llm_status == OK``; for ``DISABLED`` and ``FALLBACK`` the
    rule score is final. The LLM's ``risk_level`` is recorded but ignored: the level comes from
    the final score. ``text_rejected`` is why the model's words may not be shown (see
    :mod:`grounding`); its score still counts.
    """
    if llm_status is not LLMStatus.OK or answer is None:
        status = LLMStatus.DISABLED if llm_status is LLMStatus.DISABLED else LLMStatus.FALLBACK
        score = clamp_score(rules.score)
        return Assessment(
            risk_score=score,
            risk_level=level_for(score),
            summary=rules_summary(rules, counts),
            reasoning=rules_reasoning(rules),
            factors=rules.factors,
            llm_status=status,
            rule_score=score,
            llm_error=llm_error if status is LLMStatus.FALLBACK else None,
            model=model,
            timings_ms=timings_ms,
        )

    llm_score = clamp_score(answer.risk_score)
    total = weights.rules + weights.llm
    mixed = (weights.rules * rules.score + weights.llm * llm_score) / total
    floor = rules.score - weights.max_llm_decrease
    score = clamp_score(max(mixed, floor))
    level = level_for(score)
    delta = score - rules.score
    factors = rules.factors
    if delta:
        factors = (
            *rules.factors,
            Factor(
                LLM_ADJUSTMENT,
                delta,
                f"model scored {llm_score}; blended {weights.rules:g}:{weights.llm:g}"
                f" with rules {rules.score}",
            ),
        )
    # The model's words describe the scene *it* scored. When its score lands in another band
    # than the one we report (SmolLM2 called a detected gun "a dog in the yard", 5/100), its
    # summary would contradict the event, so the rules' text is used and the disagreement said.
    rejected = text_rejected
    if level_for(llm_score) is not level:
        rejected = (
            f"the model scored {llm_score} ({level_for(llm_score).value}) but the event is {level}"
        )
    if rejected is None:
        summary = answer.summary.strip() or rules_summary(rules, counts, level)
        reasoning = answer.reasoning.strip() or rules_reasoning(rules)
    else:
        summary = rules_summary(rules, counts, level)
        reasoning = f"{rules_reasoning(rules)} The model's text was not used: {rejected}."
    return Assessment(
        risk_score=score,
        risk_level=level,
        summary=summary,
        reasoning=reasoning,
        factors=factors,
        llm_status=LLMStatus.OK,
        rule_score=rules.score,
        llm_score=llm_score,
        llm_level=answer.risk_level,
        llm_factors=answer.factors,
        llm_raw=answer.raw,
        summary_source=SummarySource.RULES if rejected else SummarySource.LLM,
        summary_rejected=rejected,
        model=model,
        timings_ms=timings_ms,
    )
