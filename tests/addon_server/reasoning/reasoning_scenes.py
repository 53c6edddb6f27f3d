"""Scene builders shared by the reasoning tests (plain functions, no mocks; not a conftest so
that tests can import them by name)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone

from addon_server.reasoning.context import (
    BBox,
    DetectedObject,
    Enrichment,
    HistoryPoint,
    PersonSighting,
    SceneContext,
)

LOCAL = timezone(timedelta(hours=1))
DAY = datetime(2026, 11, 23, 14, 5, tzinfo=LOCAL)
NIGHT = datetime(2026, 11, 23, 2, 14, tzinfo=LOCAL)


def obj(class_name: str, confidence: float = 0.9, size: float = 100.0) -> DetectedObject:
    """A detection on a 1000x1000 frame; ``size`` is the box side in pixels."""
    return DetectedObject(class_name, confidence, BBox(10, 10, size, size), 1000, 1000)


def scene(
    *classes: str,
    at: datetime = DAY,
    camera: str = "front_door",
    zone: str | None = None,
    enrichments: Mapping[str, Sequence[Enrichment]] | None = None,
    persons: Sequence[PersonSighting] = (),
    history: Sequence[HistoryPoint] = (),
) -> SceneContext:
    return SceneContext(
        camera=camera,
        timestamp=at,
        objects=tuple(obj(c) for c in classes),
        zone=zone,
        enrichments=dict(enrichments or {}),
        persons=tuple(persons),
        history=tuple(history),
    )
