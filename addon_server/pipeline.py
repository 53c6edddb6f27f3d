"""The analyze pipeline: one camera image, left to right, into a stored risk event.

decode → detect (batcher) → enrich (zoo: what the detections trigger) → re-ID (faces, and
bodies from the zoo's appearance vectors) → annotate → reason (rules) → store → (background)
LLM refinement. Each stage hands the next a typed result; this module is the only place that
knows the order, so a newcomer can follow one frame here from start to finish. The event is
committed to SQLite before :meth:`Analyzer.analyze` returns — the HTTP response is only sent
for an event that is already safe on disk.

The answer is the rules' verdict (revision 1, ``phase: "initial"``); where the gate
(:mod:`addon_server.reasoning.gate`) says the LLM can matter, the :class:`Refiner` asks it
afterwards and stores revision 2 of the same event, which clients follow on the event stream.

Pixels are the expensive part: a frame is decoded at the analysis' working size
(``analysis.max_side``; results are still reported in the upload's own pixels) and lives from
decode to annotate only, inside one of ``analysis.max_concurrent`` slots (:class:`Admission`).
Reasoning runs after the slot and the pixels are released; the LLM's seconds are not waited
for at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from addon_server.config import AnalysisSettings, ImageSettings, PrivacySettings
from addon_server.detector.base import DetectionResult, Selection
from addon_server.detector.service import DetectionService
from addon_server.imaging import Box, annotate_jpeg, decode
from addon_server.privacy import faces_to_blur
from addon_server.reasoning.context import (
    BBox,
    DetectedObject,
    HistoryPoint,
    HomeState,
    PersonSighting,
    SceneContext,
    Sighting,
    category_of,
)
from addon_server.reasoning.context import (
    Enrichment as Record,
)
from addon_server.reasoning.levels import RiskLevel, level_for
from addon_server.reasoning.reasoner import Reasoner
from addon_server.refinement import EventLLMStatus, RefineJob, Refiner, risk_fields
from addon_server.reid.bodies import BodyGallery, BodyMatch
from addon_server.reid.gallery import FaceMatch, ReidService, SeenOn
from addon_server.store import EventStore, new_id
from addon_server.tracing import stage
from addon_server.zoo.evidence import records
from addon_server.zoo.interface import Frame, in_pixels
from addon_server.zoo.registry import THREAT_CLASSES
from addon_server.zoo.service import Enricher, EnrichOutcome


@dataclass(frozen=True, slots=True)
class AnalyzeRequest:
    """What the caller asked: which camera, when, and how."""

    camera: str
    timestamp: datetime
    zone: str | None = None
    use_llm: bool = True
    notify_level: RiskLevel = RiskLevel.HIGH
    home: HomeState | None = None


class AnalysisBusyError(Exception):
    """Every analysis slot is taken and the waiting line is full; retry in ``retry_after`` s."""

    def __init__(self, retry_after: int, slots: int, waiting: int) -> None:
        super().__init__(
            f"the add-on is busy: {slots} analyses running and {waiting} waiting; "
            f"retry in {retry_after} s"
        )
        self.retry_after = retry_after


class Admission:
    """At most ``slots`` analyses hold pixels at once; at most ``max_waiting`` wait for one.

    Each analysis in a slot may briefly hold a full-size decode (a 36 Mpx PNG is ~150 MB in
    Pillow), so the slots bound the add-on's memory whatever the load. Requests beyond them wait
    in arrival order (``asyncio.Semaphore`` is FIFO); when ``max_waiting`` already wait, the next
    is refused at once with a Retry-After estimated from recent slot times, rather than queued
    without bound: a camera pipeline can drop or resend a frame, while an endless queue only
    grows latency and holds every waiting upload in memory.
    """

    def __init__(self, slots: int, max_waiting: int) -> None:
        self.slots = slots
        self.max_waiting = max_waiting
        self.waiting = 0
        self._semaphore = asyncio.Semaphore(slots)
        self._ewma_seconds = 0.0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block; raises :class:`AnalysisBusyError` when the line is full."""
        if self._semaphore.locked() and self.waiting >= self.max_waiting:
            raise AnalysisBusyError(self._retry_after(), self.slots, self.waiting)
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        started = time.monotonic()
        try:
            yield
        finally:
            self._semaphore.release()
            held = time.monotonic() - started
            ewma = self._ewma_seconds
            self._ewma_seconds = held if ewma == 0 else 0.8 * ewma + 0.2 * held

    def _retry_after(self) -> int:
        """Whole seconds until the line ahead has likely gone through the slots (at least 1)."""
        per_slot = self._ewma_seconds or 1.0
        return max(1, math.ceil(per_slot * (self.waiting + self.slots) / self.slots))


class Analyzer:
    """Runs the stages for one image and stores the event."""

    def __init__(
        self,
        detection: DetectionService,
        reid: ReidService,
        reasoner: Reasoner,
        store: EventStore,
        settings: AnalysisSettings,
        images: ImageSettings,
        *,
        zoo: Enricher | None = None,
        privacy: PrivacySettings | None = None,
        refiner: Refiner | None = None,
    ) -> None:
        self.detection = detection
        self.privacy = privacy or PrivacySettings()
        self.zoo = zoo
        self.reid = reid
        self.bodies = BodyGallery(store, reid.window_seconds)
        self.reasoner = reasoner
        self.store = store
        self.settings = settings
        self.images = images
        self.admission = Admission(settings.max_concurrent, settings.max_waiting)
        self.refiner = refiner or Refiner(reasoner, store, workers=reasoner.settings.parallel)

    def _selection(self) -> Selection:
        """The configured classes, plus the detector's weapon classes when the zoo is on."""
        detector = self.detection.detector
        if self.zoo is None or detector is None:
            return self.detection.selection()
        weapons = THREAT_CLASSES & set(detector.class_names)
        return self.detection.selection(
            classes=sorted(set(self.detection.settings.classes) | weapons)
        )

    async def analyze(
        self, request: AnalyzeRequest, upload: bytes, content_type: str | None = None
    ) -> dict[str, Any]:
        """Analyse the uploaded image bytes into a stored event.

        Raises :class:`~addon_server.imaging.ImageError` for a refused image and
        :class:`AnalysisBusyError` when no slot is free and the waiting line is full.
        """
        timings: dict[str, float] = {}
        ts = request.timestamp.timestamp()
        event_id = new_id(ts)

        started = time.perf_counter()
        async with self.admission.slot():
            timings["queue"] = _ms(started)
            with stage("decode", timings):
                image = await asyncio.to_thread(
                    decode,
                    upload,
                    max_pixels=self.images.max_pixels,
                    content_type=content_type,
                    max_side=self.settings.max_side,
                )

            with stage("detect", timings):
                detected = await self.detection.detect(image, self._selection())

            with stage("enrich", timings):
                outcome = EnrichOutcome()
                frame_detections = in_pixels(detected.detections, image)
                if self.zoo is not None:
                    frame = Frame(image.pixels, frame_detections, request.camera)
                    outcome = await self.zoo.enrich(frame)
            for name, ms in outcome.timings_ms.items():
                timings[f"enrich_{name}"] = ms

            searched = self.reid.available  # and still after: else no face search ran
            with stage("reid", timings):
                matches = await self.reid.identify(request.camera, ts, image)

            with stage("annotate", timings):
                hidden = faces_to_blur(  # before encoding: the snapshot is what the disk gets
                    self.privacy,
                    matches,
                    detected.detections,
                    searched=searched and self.reid.available,
                )
                snapshot = await asyncio.to_thread(
                    annotate_jpeg, image, _boxes(detected, matches), hidden
                )
            size = {"width": image.width, "height": image.height}
            del image  # the pixels go with the slot

        with stage("reid_body", timings):  # the body vectors are computed: no pixels needed
            bodies = await self.bodies.identify(ts, outcome.results, frame_detections)

        with stage("reason", timings):
            history = await self.store.recent_events(
                request.camera, ts - self.settings.history_seconds
            )
            evidence = records(outcome.results, frame_detections)
            context = _scene(request, detected, matches, bodies, history, ts, evidence)
            feedback = await self.store.feedback_on(request.camera)  # calibration's evidence
            verdict = self.reasoner.rule_verdict(
                context, use_llm=request.use_llm, feedback=feedback
            )
            assessment, decision = verdict.assessment, verdict.decision
        for part, ms in (assessment.timings_ms or {}).items():
            timings[f"reason_{part}"] = ms

        level = assessment.risk_level
        missing = list(dict.fromkeys((*detected.missing_stages, *outcome.missing_stages)))
        status = EventLLMStatus.PENDING if decision.asked else EventLLMStatus.SKIPPED
        document: dict[str, Any] = {
            "id": event_id,
            "camera": request.camera,
            "zone": request.zone,
            "timestamp": request.timestamp.astimezone(UTC).isoformat(),
            "ts": ts,
            **risk_fields(assessment, status, request.notify_level, revision=1),
            "llm_decision": decision.as_json(),
            "detections": [d.as_json() for d in detected.detections],
            "counts": _counts(detected),
            "enrichments": outcome.as_json(),
            "degraded": bool(missing),
            "missing_stages": missing,
            "reid": [_match_json(m) for m in matches],
            "body_reid": [_body_json(b, detected) for b in bodies],
            "image": size,
            "model": detected.model,
            "snapshot_url": f"/v1/events/{event_id}/snapshot.jpg",
            "home_state": None if request.home is None else request.home.as_json(),
        }
        stored = {**document, "timings_ms": timings}
        with stage("store", timings):
            await self.store.add_event(
                stored,
                snapshot,
                self.reid.sightings(matches, request.camera, ts, event_id)
                + self.bodies.sightings(bodies, request.camera, ts, event_id),
            )
        if decision.asked:
            await self.refiner.submit(RefineJob(stored, context, verdict, request.notify_level))
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


def _elsewhere(
    camera: str, seen: Sequence[SeenOn], by: str, calibrated: bool = True
) -> list[Sighting]:
    return [
        Sighting(s.camera, s.seconds_ago, by, _unit(s.similarity), calibrated)
        for s in seen
        if s.camera != camera
    ]


def _unit(similarity: float) -> float:
    return min(1.0, max(0.0, similarity))


def _persons(
    camera: str,
    detected: DetectionResult,
    matches: Sequence[FaceMatch],
    bodies: Sequence[BodyMatch],
) -> tuple[PersonSighting, ...]:
    """One sighting per person: a face and the body of the person box around it are merged.

    A face's sightings come first; the body adds the cameras the face was not seen on. A body
    alone makes a sighting only when it was seen on another camera (it names nobody).
    """
    by_person: dict[int, BodyMatch] = {}
    for body in bodies:  # one body per person: the closest match of any embedder
        at = body.object_index
        if at is not None and (at not in by_person or body.similarity > by_person[at].similarity):
            by_person[at] = body
    persons: list[PersonSighting] = []
    for m in matches:
        index = _containing_person(m, detected)
        seen = _elsewhere(camera, m.seen, "face")
        found = by_person.pop(index) if index is not None and index in by_person else None
        if found is not None:
            cameras = {s.camera for s in seen}
            seen += [
                s
                for s in _elsewhere(camera, found.seen, "body", found.calibrated)
                if s.camera not in cameras
            ]
        persons.append(PersonSighting(m.person_name, _unit(m.similarity), tuple(seen), index))
    for index, body in sorted(by_person.items()):
        seen = _elsewhere(camera, body.seen, "body", body.calibrated)
        if seen:
            best = max(s.similarity or 0.0 for s in seen)
            persons.append(PersonSighting(None, best, tuple(seen), index))
    return tuple(persons)


def _scene(
    request: AnalyzeRequest,
    detected: DetectionResult,
    matches: Sequence[FaceMatch],
    bodies: Sequence[BodyMatch],
    history: Sequence[dict[str, Any]],
    ts: float,
    evidence: Mapping[str, Sequence[Record]],
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
        persons=_persons(request.camera, detected, matches, bodies),
        history=points,
        enrichments=evidence,
        home=request.home,
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


def _body_json(body: BodyMatch, detected: DetectionResult) -> dict[str, Any]:
    """A body vector's matches; its box is its person detection's, in the upload's pixels."""
    index = body.object_index
    d = detected.detections[index] if index is not None else None
    return {
        "model": body.model,
        "object_index": index,
        "bbox": None if d is None else {"x": d.x, "y": d.y, "width": d.width, "height": d.height},
        "similarity": round(body.similarity, 4),
        "calibrated": body.calibrated,
        "seen": [
            {
                "camera": s.camera,
                "seconds_ago": round(s.seconds_ago, 1),
                "similarity": round(s.similarity, 4),
            }
            for s in body.seen
        ],
    }


def utcnow() -> datetime:
    return datetime.now(UTC)
