"""Risk reasoning: deterministic rules, an LLM over HTTP, and the blend of both.

The analyze pipeline builds a :class:`SceneContext` and calls :meth:`Reasoner.assess`; the
result is the risk part of an event (score, level, summary, reasoning, factors, llm_status).
Nothing here imports torch, HTTP handlers or image code: it works on the stages' results only.
"""

from .context import (
    Attribute,
    BBox,
    DetectedObject,
    Enrichment,
    HistoryPoint,
    PersonSighting,
    Posture,
    SceneContext,
    Sighting,
    Threat,
)
from .llm import LLMAnswer, LLMError, LLMErrorKind
from .reasoner import ModelNotInstalledError, Reasoner, embedded_model_path
from .risk import Assessment, BlendWeights, LLMStatus, RiskLevel, SummarySource, level_for
from .rules import Factor, RuleConfig, RuleEngine, RuleResult
from .settings import DEFAULTS, LLMMode, ReasoningSettings, ResponseFormat
from .supervisor import ServerState, ServerStatus

__all__ = [
    "DEFAULTS",
    "Assessment",
    "Attribute",
    "BBox",
    "BlendWeights",
    "DetectedObject",
    "Enrichment",
    "Factor",
    "HistoryPoint",
    "LLMAnswer",
    "LLMError",
    "LLMErrorKind",
    "LLMMode",
    "LLMStatus",
    "ModelNotInstalledError",
    "PersonSighting",
    "Posture",
    "Reasoner",
    "ReasoningSettings",
    "ResponseFormat",
    "RiskLevel",
    "RuleConfig",
    "RuleEngine",
    "RuleResult",
    "SceneContext",
    "ServerState",
    "ServerStatus",
    "Sighting",
    "SummarySource",
    "Threat",
    "embedded_model_path",
    "level_for",
]
