"""The analyze pipeline: one camera image, left to right, into a stored risk event.

decode (done by the API) → detect (batcher) → enrich (zoo: none yet) → re-ID → reason (rules +
LLM) → annotate → store. Each stage hands the next a typed result; this module is the only
place that knows the order, so a newcomer can follow one frame here from start to finish. The
event is committed to SQLite before :meth:`Analyzer.analyze` returns — the HTTP response is
only sent for an event that is already safe on disk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from addon_server.config import AnalysisSettings
from addon_server.detector.base import DetectionResult
from addon_server.detector.service import DetectionService
from addon_server.imaging import Box, DecodedImage, annotate_jpeg
from addon_server.reasoning.context import (
    BBox,
    DetectedObject,
    HistoryPoint,
    PersonSighting,
    SceneContext,
    Sighting,
    category_of,
)
from addon_server.reasoning.levels import LEVEL_RANK, RiskLevel, level_for
from addon_server.reasoning.reasoner import Reasoner
from addon_server.reid.gallery import FaceMatch, ReidService
from addon_server.store import EventStore, new_id


@dataclass(frozen=True, slots=True)
class AnalyzeRequest:
    """What the caller asked: which camera, when, and how."""

    camera: str
    timestamp: datetime
    zone: str | None = None
    use_llm: bool = True
    notify_level: RiskLevel = RiskLevel.HIGH


class Analyzer:
    """Runs the stages for one image and stores the event."""

    def __init__(
        self,
        detection: DetectionService,
        reid: ReidService,
        reasoner: Reasoner,
        store: EventStore,
        settings: AnalysisSettings,
    ) -> None:
        self.detection = detection
        self.reid = reid
        self.reasoner = reasoner
        self.store = store
        self.settings = settings

    async def analyze(
        self, request: AnalyzeRequest, image: DecodedImage, decode_ms: float = 0.0
    ) -> dict[str, Any]:
        timings: dict[str, float] = {"decode": decode_ms}
        ts = request.timestamp.timestamp()
        event_id = new_id(ts)

        started = time.perf_counter()
        detected = await self.detection.detect(image, self.detection.selection())
        timings["detect"] = _ms(started)

        started = time.perf_counter()
        matches = await self.reid.identify(request.camera, ts, image.pixels)
        timings["reid"] = _ms(started)

        started = time.perf_counter()
        history = await self.store.recent_events(request.camera, ts - self.settings.history_seconds)
        context = _scene(request, detected, matches, history, ts)
        assessment = await self.reasoner.assess(context, use_llm=request.use_llm)
        timings["reason"] = _ms(started)
        for part, ms in (assessment.timings_ms or {}).items():
            timings[f"reason_{part}"] = ms

        started = time.perf_counter()
        snapshot = await asyncio.to_thread(annotate_jpeg, image.pixels, _boxes(detected, matches))
        timings["annotate"] = _ms(started)

        level = assessment.risk_level
        document: dict[str, Any] = {
            "id": event_id,
            "camera": request.camera,
            "zone": request.zone,
            "timestamp": request.timestamp.astimezone(UTC).isoformat(),
            "ts": ts,
            **assessment.as_json(),
            "rule_score": assessment.rule_score,
            "llm_score": assessment.llm_score,
            "llm_error": assessment.llm_error,
            "detections": [d.as_json() for d in detected.detections],
            "counts": _counts(detected),
            "enrichments": {},
            "reid": [_match_json(m) for m in matches],
            "notify": LEVEL_RANK[str(level)] >= LEVEL_RANK[str(request.notify_level)],
            "image": {"width": image.width, "height": image.height},
            "model": detected.model,
            "snapshot_url": f"/v1/events/{event_id}/snapshot.jpg",
        }
        started = time.perf_counter()
        await self.store.add_event(
            {**document, "timings_ms": timings},
            snapshot,
            self.reid.sightings(matches, request.camera, ts, event_id),
        )
        timings["store"] = _ms(started)
        document["timings_ms"] = {k: round(v, 1) for k, v in timings.items()}
        assert level_for(document["risk_score"]) is level  # the invariant, end to end
        return document


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _counts(detected: DetectionResult) -> dict[str, int]:
    counts = {"person": 0, "vehicle": 0, "animal": 0}
    for detection in detected.detections:
        category = category_of(detection.class_name)
        if category in counts:
            counts[category] += 1
    return counts


def _containing_person(match: FaceMatch, detected: DetectionResult) -> int | None:
    cx = match.face.x + match.face.width / 2
    cy = match.face.y + match.face.height / 2
    for index, d in enumerate(detected.detections):
        if d.class_name == "person" and d.x <= cx <= d.x + d.width and d.y <= cy <= d.y + d.height:
            return index
    return None


def _scene(
    request: AnalyzeRequest,
    detected: DetectionResult,
    matches: Sequence[FaceMatch],
    history: Sequence[dict[str, Any]],
    ts: float,
) -> SceneContext:
    objects = tuple(
        DetectedObject(
            d.class_name,
            d.confidence,
            BBox(d.x, d.y, d.width, d.height),
            detected.width,
            detected.height,
        )
        for d in detected.detections
    )
    persons = tuple(
        PersonSighting(
            person_name=m.person_name,
            similarity=min(1.0, max(0.0, m.similarity)),
            seen_elsewhere=tuple(
                Sighting(s.camera, s.seconds_ago) for s in m.seen if s.camera != request.camera
            ),
            object_index=_containing_person(m, detected),
        )
        for m in matches
    )
    points = tuple(
        HistoryPoint(
            seconds_ago=max(0.0, ts - float(e["ts"])), person_count=int(e["counts"]["person"])
        )
        for e in history
        if float(e["ts"]) <= ts
    )
    return SceneContext(
        camera=request.camera,
        timestamp=request.timestamp,
        objects=objects,
        zone=request.zone,
        persons=persons,
        history=points,
    )


def _boxes(detected: DetectionResult, matches: Sequence[FaceMatch]) -> list[Box]:
    boxes = [
        Box(f"{d.class_name} {d.confidence:.2f}", d.x, d.y, d.width, d.height)
        for d in detected.detections
    ]
    boxes += [
        Box(m.person_name or "face", m.face.x, m.face.y, m.face.width, m.face.height)
        for m in matches
    ]
    return boxes


def _match_json(match: FaceMatch) -> dict[str, Any]:
    return {
        "person_id": match.person_id,
        "person_name": match.person_name,
        "similarity": round(match.similarity, 4),
        "bbox": {
            "x": match.face.x,
            "y": match.face.y,
            "width": match.face.width,
            "height": match.face.height,
        },
        "seen": [{"camera": s.camera, "seconds_ago": round(s.seconds_ago, 1)} for s in match.seen],
    }


def utcnow() -> datetime:
    return datetime.now(UTC)
