"""The detect stage as the API and the analyze pipeline use it.

It owns the loaded detector and its batcher, validates per-request options into a
:class:`Selection`, and returns a typed :class:`DetectionResult`. Loading happens once at
startup; when the weights are missing the service stays up and reports the model as not
installed instead of failing the whole add-on. A detector from the model registry
(``models:/<name>@<alias>``) is rolled to the version its alias points at now by
:meth:`DetectionService.reload` (``POST /v1/models/detector/reload``): the new version is loaded
and warmed up beside the old one, then swapped in; requests already queued finish on the old.
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
DRAIN_TIMEOUT_S = 60.0
"""How long a reload waits for the requests queued on the old detector before stopping it."""


class DetectorUnavailableError(Exception):
    """The detector is not loaded (weights missing or failed to load)."""


class InvalidSelectionError(ValueError):
    """A request asked for classes or thresholds the detector cannot honour."""


class ReloadError(Exception):
    """A reload was refused or failed; the detector served before is still served."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


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


class _InFlight:
    """How many requests one batcher has accepted and not yet answered."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        self.count += 1
        self.idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.idle.set()


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
        self._batching = batching
        """The batching the running batcher has (after autotuning): a reload keeps it."""
        self._in_flight: dict[DynamicBatcher, _InFlight] = {}
        """Requests in flight per batcher: a reload stops the old one once they are answered."""
        self._reloading = asyncio.Lock()

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
        self._batching = batching
        self.batcher = DynamicBatcher(detector, batching, on_batch=self._on_batch)
        await self.batcher.start()

    async def reload(self) -> dict[str, Any]:
        """Resolve the registry alias again and, when it moved, roll the detector to it.

        The new version is loaded and warmed up while the old one keeps serving; then both
        are swapped at once (new requests go to the new batcher) and the old batcher is
        stopped when the requests queued on it are answered. Any failure leaves the old
        detector serving and raises :class:`ReloadError`. Returns ``changed``, the model
        served before and the detector's entry (``model``: the version served now).
        """
        path = self.settings.model_path
        if not is_registry_uri(path) or self.model_registry is None:
            raise ReloadError(
                409,
                "not_from_registry",
                f"the detector's model_path {path or '(embedded)'} is not a models:/ URI of a "
                "configured registry (registry.tracking_uri): restart the add-on to load "
                "another file",
            )
        if self.backend in ("triton", "ray"):
            raise ReloadError(
                409, "not_reloadable", f"the {self.backend} backend loads its own detector"
            )
        if self._reloading.locked():
            raise ReloadError(409, "reload_in_progress", "a reload of the detector is running")
        async with self._reloading:
            return await self._reload(str(path), self.model_registry)

    async def _reload(self, path: str, registry: RegistrySource) -> dict[str, Any]:
        before = self.model_name
        old, old_batcher, old_source = self.detector, self.batcher, self.source
        if old is None or old_batcher is None:  # it failed at start: this is its load
            self.source, self.installed = None, True
            await self.start()
            if self.detector is None:
                raise ReloadError(503, "reload_failed", self.load_error or "not loaded")
            return {"changed": True, "previous": before, "model": self.info().as_json()}
        try:
            found = await asyncio.to_thread(registry.resolve, path)
        except Exception as err:  # RegistryError, or anything MLflow raised
            raise ReloadError(
                503, "registry_unavailable", f"{err}; {before} is still served"
            ) from err
        if old_source is not None and found.version == old_source.version:
            self.source = found  # the same version; its note says whether the cache answered
            return {"changed": False, "previous": before, "model": self.info().as_json()}
        started = time.perf_counter()
        try:
            new, measured = await asyncio.to_thread(
                Probe(self.device).measure, lambda: self._load_and_warm(found, warmup=True)
            )
        except Exception as err:
            if old_source is not None:  # keep the version still served out of the pruning
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(
                        registry.resolve, f"models:/{old_source.name}/{old_source.version}"
                    )
            _LOGGER.exception("detector version %s failed to load", found.version)
            raise ReloadError(
                503,
                "reload_failed",
                f"{path} version {found.version} failed to load: {err}; {before} is still served",
            ) from err
        batcher = DynamicBatcher(new, self._batching, on_batch=self._on_batch)
        await batcher.start()
        # Both are booked while the old one drains.
        self.devices.reserve(self.device, SERVICE, (self.measured_bytes or 0) + measured.delta)
        self.detector, self.batcher, self.source = new, batcher, found
        self.measured_bytes = measured.delta
        loaded_s = time.perf_counter() - started
        flight = self._in_flight.pop(old_batcher, None)
        if flight is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(flight.idle.wait(), DRAIN_TIMEOUT_S)
        await old_batcher.stop()
        await asyncio.to_thread(old.close)
        self.devices.reserve(self.device, SERVICE, measured.delta)
        _LOGGER.info(
            "detector rolled from %s to %s (loaded and warmed up in %.2f s, old one drained "
            "and closed in %.2f s)",
            before,
            new.name,
            loaded_s,
            time.perf_counter() - started - loaded_s,
        )
        return {"changed": True, "previous": before, "model": self.info().as_json()}

    def _resolve_registry(self) -> None:
        """A ``models:/`` model path is resolved at every (re)load: a moved alias is picked up
        by the next start."""
        if not is_registry_uri(self.settings.model_path):
            return
        if self.model_registry is None:
            raise ModelNotInstalledError(f"{self.settings.model_path} needs registry.tracking_uri")
        self.source = self.model_registry.resolve(str(self.settings.model_path))

    def _load_and_warm(self, source: Resolved | None = None, *, warmup: bool = False) -> Detector:
        settings = self.settings
        source = source or self.source
        if source is not None:
            settings = replace(settings, model_path=str(source.path))
        detector = load_detector(settings, self.device)
        if source is not None:  # events and /v1/models name the version served
            detector.name = f"models:/{source.name}/{source.version}"
        if self.settings.warmup or warmup:
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
        self._in_flight.clear()
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
        # Held for the whole call: a reload swapping the detector meanwhile must neither
        # stop this batcher under the request nor make its answer name the new model.
        batcher, detector = self.batcher, self.detector
        if batcher is None or detector is None:
            if self.unavailable is not None:
                raise type(self.unavailable)(str(self.unavailable))
            raise DetectorUnavailableError(self.load_error or "the detector is not loaded")
        started = time.perf_counter()
        self.metrics.queue_depth.set(batcher.queue_depth)
        flight = self._in_flight.setdefault(batcher, _InFlight())
        flight.enter()
        try:
            detections, batch_size, _forward_ms = await batcher.infer(image.pixels)
        finally:
            flight.leave()
        model, missing = detector.name, tuple[str, ...]()
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
