"""Risk levels, their score bands and the 0-100 clamp: the one definition of each.

The rule engine clamps its sum with :func:`clamp_score`, the blend derives the level with
:func:`level_for`, the event store ranks levels with :data:`LEVEL_RANK` (``min_level``
filters), the API validates level names against :class:`RiskLevel`, the LLM prompt quotes
:func:`band_ranges` and the published OpenAPI enum is built from :class:`RiskLevel`. This
module imports nothing of Vigil's so that every one of those can import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "BANDS",
    "LEVEL_RANK",
    "SCORE_MAX",
    "SCORE_MIN",
    "RiskLevel",
    "band_ranges",
    "clamp_score",
    "level_for",
]

SCORE_MIN = 0
SCORE_MAX = 100


class RiskLevel(StrEnum):
    """Event levels, lowest first (their order is meaningful: ``min_level`` filters)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


#: Inclusive lower bound of each band; a score belongs to the last band whose bound it reaches.
BANDS: tuple[tuple[int, RiskLevel], ...] = (
    (SCORE_MIN, RiskLevel.LOW),
    (30, RiskLevel.MEDIUM),
    (60, RiskLevel.HIGH),
    (85, RiskLevel.CRITICAL),
)

#: Order of the levels (0 = low): what the store keeps per event to filter by ``min_level``.
LEVEL_RANK: Mapping[str, int] = MappingProxyType(
    {str(level): rank for rank, level in enumerate(RiskLevel)}
)


def clamp_score(value: float) -> int:
    """Round to an int in 0-100; NaN (a garbage blend input) becomes 0, ±inf clamps."""
    if math.isnan(value):
        return SCORE_MIN
    if value >= SCORE_MAX:
        return SCORE_MAX
    if value <= SCORE_MIN:
        return SCORE_MIN
    return round(value)


def level_for(score: float) -> RiskLevel:
    """The band of a score: 0-29 low, 30-59 medium, 60-84 high, 85-100 critical."""
    clamped = clamp_score(score)
    level = RiskLevel.LOW
    for bound, band in BANDS:
        if clamped >= bound:
            level = band
    return level


def band_ranges() -> str:
    """The bands in words, e.g. ``"low" (0-29), ..., or "critical" (85-100)``, for prompts."""
    uppers = [bound - 1 for bound, _ in BANDS[1:]] + [SCORE_MAX]
    parts = [
        f'"{level}" ({bound}-{upper})' for (bound, level), upper in zip(BANDS, uppers, strict=True)
    ]
    return f"{', '.join(parts[:-1])} or {parts[-1]}"
