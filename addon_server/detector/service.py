"""The detect stage as the API and the analyze pipeline use it.

It owns the loaded detector and its batcher, validates per-request options into a
:class:`Selection`, and returns a typed :class:`DetectionResult`. Loading happens once at
startup; when the weights are missing the service stays up and reports the model as not
installed instead of failing the whole add-on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from addon_server.config import BatchingSettings, DetectorSettings
from addon_server.detector import ModelNotInstalledError, load_detector, resolve_backend
from addon_server.detector.autotune import TuneResult, best_batch_size
from addon_server.detector.base import (
    Detection,
    DetectionResult,
    Detector,
    FallbackDetections,
    Selection,
    clip_box,
    select,
)
from addon_server.detector.batcher import DynamicBatcher
from addon_server.detector.triton import TritonDetector
from addon_server.devices import DeviceTable
from addon_server.errors import BackendUnavailableError
from addon_server.imaging import DecodedImage
from addon_server.metrics import Metrics
from addon_server.served import ModelInfo, NotUnloadableError
from addon_server.zoo.memory import Probe
from addon_server.zoo.mlflow_source import RegistrySource, Resolved, is_registry_uri

_LOGGER = logging.getLogger(__name__)
SERVICE = "detector"


class DetectorUnavailableError(Exception):
    """The detector is not loaded (weights missing or failed to load)."""


class InvalidSelectionError(ValueError):
    """A request asked for classes or thresholds the detector cannot honour."""


def _to_original(detections: list[Detection], image: DecodedImage) -> list[Detection]:
    """Map boxes found on a reduced decode back to the original image's pixels."""
    if not image.reduced:
        return detections
    sx, sy = image.to_original()
    out = []
    for d in detections:
        x, y, w, h = clip_box(
            d.x * sx,
            d.y * sy,
            (d.x + d.width) * sx,
            (d.y + d.height) * sy,
            image.width,
            image.height,
        )
        out.append(Detection(d.class_name, d.confidence, x, y, w, h))
    return out


class DetectionService:
    """The loaded detector behind its dynamic batcher."""

    def __init__(
        self,
        settings: DetectorSettings,
        batching: BatchingSettings,
        devices: DeviceTable,
        metrics: Metrics,
        detector: Detector | None = None,
        model_registry: RegistrySource | None = None,
    ) -> None:
        self.settings = settings
        self.model_registry = model_registry
        self.source: Resolved | None = None
        """The registry version loaded, when ``model_path`` is a ``models:/`` URI."""
        self.batching = batching
        self.devices = devices
        self.metrics = metrics
        self.device = devices.device_for(SERVICE)
        self.detector: Detector | None = detector
        self.batcher: DynamicBatcher | None = None
        self.load_error: str | None = None
        self.installed = True
        self.tuning: TuneResult | None = None
        self.measured_bytes: int | None = None
        self.backend = resolve_backend(settings)
        self.unavailable: BackendUnavailableError | None = None
        """Why a served detector (Triton) could not be loaded yet; retried in the background."""
        self._loading: asyncio.Task[None] | None = None

    @property
    def model_name(self) -> str:
        if self.detector is not None:
            return self.detector.name
        if self.backend == "triton":
            return self.settings.triton.model
        return self.settings.model_path or "yolov3-tiny-coco"

    async def start(self) -> None:
        if self._loading is not None and not self._loading.done():
            return  # a served detector is being retried in the background
        detector = self.detector
        if detector is None:
            try:
                # Outside the measurement: the download (and mlflow's import) is not the model.
                await asyncio.to_thread(self._resolve_registry)
                detector, measured = await asyncio.to_thread(
                    Probe(self.device).measure, self._load_and_warm
                )
            except ModelNotInstalledError as err:
                self.installed = False
                self.load_error = str(err)
                _LOGGER.error("detector not installed: %s", err)
                return
            except BackendUnavailableError as err:
                # The server (Triton) may start after the add-on: keep trying in the
                # background; /health and /v1/detect name the cause meanwhile.
                self.unavailable, self.load_error = err, str(err)
                _LOGGER.warning("detector backend unavailable; retrying: %s", err)
                self._loading = asyncio.create_task(
                    self._load_when_available(), name="vigil-detector-load"
                )
                return
            except Exception as err:  # a bad model file must not stop the server
                self.load_error = f"failed to load: {err}"
                _LOGGER.exception("detector failed to load")
                return
            self.measured_bytes = measured.delta
        else:
            if self.settings.warmup:
                await asyncio.to_thread(self._warmup, detector)
            self.measured_bytes = detector.memory_bytes()
        assert detector is not None
        await self._serve(detector)

    async def _load_when_available(self) -> None:
        """Retry loading a served detector every probe interval until its server answers."""
        while True:
            await asyncio.sleep(self.settings.triton.probe_interval_s)
            try:
                detector, measured = await asyncio.to_thread(
                    Probe(self.device).measure, self._load_and_warm
                )
            except BackendUnavailableError as err:
                self.unavailable, self.load_error = err, str(err)
                continue
            except Exception as err:
                self.unavailable, self.load_error = None, f"failed to load: {err}"
                _LOGGER.exception("detector failed to load")
                return
            _LOGGER.info("detector backend available again: %s", detector.name)
            self.unavailable, self.measured_bytes = None, measured.delta
            await self._serve(detector)
            return

    async def _serve(self, detector: Detector) -> None:
        """Tune the loaded (and warmed-up) detector's batch size and start its batcher."""
        self.detector = detector
        self.load_error = None
        self.device = detector.device
        batching = self.batching
        if (
            self.settings.warmup
            and batching.enabled
            and batching.autotune
            and batching.max_batch_size > 1
        ):
            tuning = await asyncio.to_thread(best_batch_size, detector, batching.max_batch_size)
            self.tuning = tuning
            preferred = tuple(s for s in batching.preferred_batch_sizes if s <= tuning.batch_size)
            batching = replace(
                batching, max_batch_size=tuning.batch_size, preferred_batch_sizes=preferred
            )
        self.devices.reserve(self.device, SERVICE, self.measured_bytes or 0)
        self.metrics.model_loaded.set(1)
        self.batcher = DynamicBatcher(detector, batching, on_batch=self._on_batch)
        await self.batcher.start()

    def _resolve_registry(self) -> None:
        """A ``models:/`` model path is resolved at every (re)load: a moved alias is picked up
        by the next start."""
        if not is_registry_uri(self.settings.model_path):
            return
        if self.model_registry is None:
            raise ModelNotInstalledError(f"{self.settings.model_path} needs registry.tracking_uri")
        self.source = self.model_registry.resolve(str(self.settings.model_path))

    def _load_and_warm(self) -> Detector:
        settings = self.settings
        if self.source is not None:
            settings = replace(settings, model_path=str(self.source.path))
        detector = load_detector(settings, self.device)
        if self.source is not None:  # events and /v1/models name the version served
            detector.name = f"models:/{self.source.name}/{self.source.version}"
        if self.settings.warmup:
            self._warmup(detector)
        return detector

    @staticmethod
    def _warmup(detector: Detector) -> None:
        import numpy as np

        detector.detect_batch([np.zeros((64, 64, 3), dtype=np.uint8)])

    async def stop(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading
            self._loading = None
        if self.batcher is not None:
            await self.batcher.stop()
            self.batcher = None
        if self.detector is not None:
            self.devices.release(self.device, SERVICE)
            self.detector.close()
            self.detector = None
        self.metrics.model_loaded.set(0)

    def _on_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.batch_seconds.observe(seconds)

    def selection(
        self, confidence: float | None = None, classes: Iterable[str] | None = None
    ) -> Selection:
        """Validate per-request options; defaults are the configured security classes."""
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            raise InvalidSelectionError(f"confidence must be between 0 and 1, got {confidence}")
        chosen = frozenset(classes) if classes is not None else frozenset(self.settings.classes)
        if self.detector is not None:
            unknown = sorted(chosen - set(self.detector.class_names))
            if unknown:
                raise InvalidSelectionError(
                    f"unknown classes {', '.join(unknown)}; the model knows "
                    f"{len(self.detector.class_names)} classes, e.g. "
                    f"{', '.join(self.detector.class_names[:5])}"
                )
        if not chosen:
            raise InvalidSelectionError("classes must name at least one class")
        return Selection(
            classes=chosen,
            default_threshold=self.settings.confidence,
            class_thresholds=self.settings.class_thresholds,
            override=confidence,
        )

    async def detect(self, image: DecodedImage, selection: Selection) -> DetectionResult:
        """Run one image through the batcher and keep what ``selection`` asks for."""
        if self.batcher is None or self.detector is None:
            if self.unavailable is not None:
                raise type(self.unavailable)(str(self.unavailable))
            raise DetectorUnavailableError(self.load_error or "the detector is not loaded")
        started = time.perf_counter()
        self.metrics.queue_depth.set(self.batcher.queue_depth)
        detections, batch_size, _forward_ms = await self.batcher.infer(image.pixels)
        model, missing = self.detector.name, tuple[str, ...]()
        if isinstance(detections, FallbackDetections):  # a stage was down for this image
            model, missing = detections.model, detections.missing_stages
        kept = select(_to_original(detections, image), selection)
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.metrics.detections_per_image.observe(len(kept))
        return DetectionResult(
            detections=kept,
            width=image.width,
            height=image.height,
            inference_time_ms=elapsed_ms,
            model=model,
            batch_size=batch_size,
            missing_stages=missing,
        )

    def triton_health(self) -> dict[str, Any] | None:
        """Triton's health, metadata and statistics, when the detector is served there."""
        return self.detector.health() if isinstance(self.detector, TritonDetector) else None

    def issues(self) -> list[dict[str, Any]]:
        """A Triton backend or a Ray stage that cannot answer: a repair in Home Assistant
        until it is back."""
        if self.backend == "ray":
            from addon_server.ray_serve.client import board_for

            assert self.settings.ray.serve_url is not None  # config.py requires it
            return board_for(self.settings.ray.serve_url).issues(("detector", "zoo"))
        if self.backend != "triton":
            return []
        triton = self.triton_health()
        if triton is None:
            message = self.load_error or "the Triton backend is not connected"
        elif triton["error"] is not None:
            message = str(triton["error"])
        else:
            return []
        return [{"code": "triton_unavailable", "model": self.model_name, "message": message}]

    @property
    def name(self) -> str:
        return self.model_name

    def info(self) -> ModelInfo:
        """The detector's entry in /health and /v1/models (the served-model interface)."""
        if self.detector is not None:
            state = "loaded"
        else:
            state = "failed" if self.installed else "not_installed"
        return ModelInfo(
            self.model_name,
            "detector",
            self.detector.backend if self.detector else self.backend,
            self.device,
            state,
            self.installed,
            measured_bytes=self.measured_bytes,
            accounted_bytes=self.measured_bytes or 0 if self.detector is not None else 0,
            priority="critical",
            unloadable=False,
            error=self.load_error,
            triton=self.triton_health(),
            registry=self.source.as_json() if self.source is not None else None,
        )

    async def load(self, *, pin: bool | None = None) -> None:
        """Load the detector if it failed at start-up (a file installed since)."""
        if self.detector is None:
            self.installed = True
            await self.start()
        if self.detector is None:
            raise ModelNotInstalledError(self.load_error or "the detector is not installed")

    async def unload(self) -> None:
        raise NotUnloadableError(
            f"{self.model_name} is the detector and stays loaded while the add-on runs"
        )
