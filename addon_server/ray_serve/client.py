"""The add-on's side of ``BACKEND=ray``: HTTP clients of the Vigil Serve application.

The add-on stays the front door (auth, events, gallery, rules); the model stages run on the
cluster. :class:`RayDetector` is one more detector backend (behind the add-on's own batcher),
:class:`RayZoo` is the enrich stage. Both speak HTTP to the application's ingress, so the add-on
needs no Ray import and no Ray driver: a cluster that goes away costs a timeout, never the
add-on.

:class:`StageBoard` remembers which stage last failed to answer and why: ``/health`` reports
each as a ``stage_unavailable`` issue (a repair in Home Assistant) until a call to that stage
succeeds again.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from addon_server import tracing
from addon_server.config import RaySettings
from addon_server.detector.base import Detection, Detector, FallbackDetections, canonical_class
from addon_server.errors import BackendUnavailableError
from addon_server.imaging import BGRImage
from addon_server.zoo.interface import Enrichment, Frame
from addon_server.zoo.models.appearance import AppearanceResult
from addon_server.zoo.service import EnrichOutcome, Skipped

_LOGGER = logging.getLogger(__name__)


class RayStageUnavailableError(BackendUnavailableError):
    """A stage on the Ray cluster did not answer (its host is gone, or it timed out)."""

    code = "stage_unavailable"


class StageBoard:
    """Which stages are unavailable now, and why (thread-safe: the detector runs in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down: dict[str, tuple[str, float]] = {}

    def failed(self, stage: str, message: str) -> None:
        with self._lock:
            self._down[stage] = (message, time.time())

    def answered(self, stage: str) -> None:
        with self._lock:
            self._down.pop(stage, None)

    def missing(self) -> list[str]:
        with self._lock:
            return sorted(self._down)

    def issues(self, stages: Container[str] | None = None) -> list[dict[str, Any]]:
        """``stage_unavailable`` issues for /health (``service`` names the stage, for HA);
        ``stages``: only these (the detector service reports its stages, the reasoner the LLM's).
        """
        with self._lock:
            down = sorted(self._down.items())
        return [
            {"code": "stage_unavailable", "service": stage, "message": message}
            for stage, (message, _since) in down
            if stages is None or stage in stages
        ]


BOARDS: dict[str, StageBoard] = {}
"""One board per Serve application URL: the detector (built by the detector loader) and the
zoo client (built by the app factory) of one add-on share it."""


def board_for(url: str) -> StageBoard:
    return BOARDS.setdefault(url.rstrip("/"), StageBoard())


def npz(**arrays: Any) -> bytes:
    """Arrays as one ``.npz`` body (the pixels cross the wire as they are, no re-encoding)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def detection_of(row: Sequence[Any]) -> Detection:
    name, confidence, x, y, w, h = row
    return Detection(canonical_class(str(name)), float(confidence), int(x), int(y), int(w), int(h))


def detection_row(d: Detection) -> list[Any]:
    return [d.class_name, d.confidence, d.x, d.y, d.width, d.height]


PROBE_TIMEOUT_S = 2.0
"""How long a known-down detector stage is given to answer its ``/classes`` once a retry is
due. An answer takes milliseconds; a host still gone would otherwise hold one analysis every
``retry_s`` for the full stage timeout."""


class RayDetector:
    """A Vigil detector served by the cluster's ``Detector`` deployment (``/detect``).

    Pixels travel as raw arrays (npz), not re-encoded: the boxes are the ones the same model
    finds in-process. When the stage fails or times out, /health names it; with a
    ``fallback`` (``ray.detector_fallback: local``) the batch is detected by that local model
    instead — loaded on the first failure, then kept — and each image's list is a
    :class:`~addon_server.detector.base.FallbackDetections` naming the stage missing, so the
    analysis answers ``degraded``; without one it raises :class:`RayStageUnavailableError`
    (the analysis answers 503). While the stage is known down the cluster is asked again only
    every ``retry_s``, and then first with a short probe (``/classes``, at most
    :data:`PROBE_TIMEOUT_S`): the requests in between, and a retry that finds the stage still
    down, go straight to the fallback instead of waiting the stage timeout. The probe's answer
    also gives back the cluster's model name and classes (the add-on may have started on the
    fallback's).
    """

    backend = "ray"

    def __init__(
        self,
        settings: RaySettings,
        *,
        device: str = "ray",
        fallback: Callable[[], Detector] | None = None,
    ) -> None:
        assert settings.serve_url is not None
        self.url = settings.serve_url.rstrip("/")
        self.timeout_s = settings.detector_timeout_s
        self.retry_s = settings.retry_s
        self.device = device
        self.board = board_for(self.url)
        self._load_fallback = fallback
        self._fallback: Detector | None = None
        self._fallback_lock = threading.Lock()
        self._retry_at = 0.0
        """``time.monotonic()`` before which the stage is not asked again (it is down)."""
        self.class_names: tuple[str, ...] = ()
        self.name = ""
        try:
            self._describe(self._post("classes", b""))
        except RayStageUnavailableError:
            if fallback is None:
                raise
            self._retry_at = time.monotonic() + self.retry_s
            local = self.fallback()  # the add-on starts on it; the probe brings the cluster's
            self.class_names, self.name = local.class_names, local.name

    def _describe(self, answer: dict[str, Any]) -> None:
        """Take the cluster's model name and classes from a ``/classes`` answer."""
        self.class_names = tuple(canonical_class(n) for n in answer["classes"])
        self.name = str(answer["model"])

    def fallback(self) -> Detector:
        """The local detector, loaded on first use (blocking: the batcher's thread)."""
        assert self._load_fallback is not None
        with self._fallback_lock:
            if self._fallback is None:
                _LOGGER.warning("the detector stage is down: loading the local fallback")
                self._fallback = self._load_fallback()
            return self._fallback

    def _post(self, route: str, body: bytes, timeout_s: float | None = None) -> dict[str, Any]:
        # S310: config.py admits only http(s) URLs for ray.serve_url.
        request = urllib.request.Request(  # noqa: S310
            f"{self.url}/{route}", data=body, method="POST", headers=tracing.inject()
        )  # the batch's trace (traceparent) goes on to the replicas
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                found: dict[str, Any] = json.loads(response.read())
        except (OSError, ValueError) as err:  # URLError, HTTPError, timeouts, bad JSON
            message = f"the detector stage at {self.url} did not answer: {_reason(err)}"
            self.board.failed("detector", message)
            raise RayStageUnavailableError(message) from err
        self.board.answered("detector")
        return found

    def _back(self) -> bool:
        """A retry is due for the down stage: does it answer a short probe? (Its answer
        names the cluster's model and classes again.)"""
        try:
            self._describe(self._post("classes", b"", min(self.timeout_s, PROBE_TIMEOUT_S)))
        except RayStageUnavailableError:
            self._retry_at = time.monotonic() + self.retry_s
            return False
        return True

    def detect_batch(self, images: Sequence[BGRImage]) -> list[list[Detection]]:
        known_down = self._load_fallback is not None and self._retry_at > 0
        if known_down and (time.monotonic() < self._retry_at or not self._back()):
            return self._locally(images)
        try:
            answer = self._post("detect", npz(**{str(i): img for i, img in enumerate(images)}))
        except RayStageUnavailableError:
            if self._load_fallback is None:
                raise
            self._retry_at = time.monotonic() + self.retry_s
            return self._locally(images)
        self._retry_at = 0.0
        results = answer["results"]
        if results:  # a redeployed application may serve another model: name the one that ran
            self.name = str(results[0].get("model", self.name))
        return [[detection_of(r) for r in one["detections"]] for one in results]

    def _locally(self, images: Sequence[BGRImage]) -> list[list[Detection]]:
        local = self.fallback()
        return [
            FallbackDetections(found, model=local.name, missing_stages=("detector",))
            for found in local.detect_batch(images)
        ]

    def memory_bytes(self) -> int:
        """The cluster's weights live on its hosts; only a loaded fallback is in this process."""
        return 0 if self._fallback is None else self._fallback.memory_bytes()

    def close(self) -> None:
        """Every call is its own HTTP request; only a loaded fallback holds anything."""
        if self._fallback is not None:
            self._fallback.close()


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


@dataclass(frozen=True, slots=True)
class RemoteEnrichment:
    """A zoo model's answer computed on the cluster: its JSON and its sentences for the LLM."""

    document: dict[str, Any]
    lines: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return self.document

    def context_lines(self) -> list[str]:
        return list(self.lines)


def remote_result(found: dict[str, Any]) -> Enrichment:
    """One model's answer from the ``Zoo`` deployment as the pipeline's result.

    The evidence records read any result's JSON (``zoo/evidence.py``), so a
    :class:`RemoteEnrichment` serves them; body re-ID needs the vectors, so an appearance
    model's answer (its ``appearance`` wire document) becomes a real ``AppearanceResult``."""
    if "appearance" in found:
        return AppearanceResult.from_wire(found["appearance"])
    return RemoteEnrichment(found["result"], tuple(found.get("context_lines", ())))


class RayZoo:
    """The enrich stage on the cluster's ``Zoo`` deployment (``/enrich``).

    The ingress picks the models the detections trigger and runs each on the replica that has it
    loaded. Past ``zoo_timeout_s`` — or when the ingress itself reports the zoo missing — the
    analysis goes on without enrichments, and the outcome names the stage missing.
    """

    def __init__(self, settings: RaySettings) -> None:
        assert settings.serve_url is not None
        self.url = settings.serve_url.rstrip("/")
        self.timeout_s = settings.zoo_timeout_s
        self.board = board_for(self.url)

    async def enrich(self, frame: Frame, models: Iterable[str] | None = None) -> EnrichOutcome:
        outcome = EnrichOutcome()
        rows = json.dumps([detection_row(d) for d in frame.detections])
        body = npz(pixels=frame.pixels, detections=np.array(rows))
        params = {"camera": frame.camera or ""}
        if models is not None:
            params["models"] = ",".join(models)
        started = time.perf_counter()
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(f"{self.url}/enrich", data=body, params=params) as response,
            ):
                response.raise_for_status()
                answer: dict[str, Any] = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as err:
            message = (
                f"the zoo stage at {self.url} did not answer: {str(err) or type(err).__name__}"
            )
            self.board.failed("zoo", message)
            outcome.missing_stages.append("zoo")
            outcome.skipped["zoo"] = Skipped("stage_unavailable", message)
            return outcome
        outcome.timings_ms["ray"] = (time.perf_counter() - started) * 1000
        for name, found in answer["results"].items():
            outcome.results[name] = remote_result(found)
        for name, skip in answer["skipped"].items():
            outcome.skipped[name] = Skipped(skip["reason"], skip["message"])
        outcome.missing_stages.extend(answer["missing_stages"])
        if "zoo" in outcome.missing_stages:
            reasons = sorted({s["message"] for s in answer["skipped"].values()})
            self.board.failed("zoo", "; ".join(reasons) or "the zoo stage did not answer")
        else:
            self.board.answered("zoo")
        return outcome
