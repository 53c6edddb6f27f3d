"""The app factory: builds the services once, registers the API, starts and stops them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from addon_server import api, tracing
from addon_server.api.auth import auth_middleware
from addon_server.api.errors import METRICS_KEY, error_middleware
from addon_server.config import Settings
from addon_server.detector.base import Detector
from addon_server.detector.service import DetectionService
from addon_server.devices import DeviceTable, DiscoveredDevice, discover
from addon_server.metrics import Metrics
from addon_server.pipeline import Analyzer
from addon_server.reasoning.reasoner import Reasoner
from addon_server.reid.embedders import FACE_EMBEDDERS, OnnxFaceEmbedder
from addon_server.reid.gallery import ReidService
from addon_server.services import SERVICES_KEY, Services, instance_id
from addon_server.store import EventStore
from addon_server.zoo.mlflow_source import RegistrySource
from addon_server.zoo.service import Enricher, ZooService

_LOGGER = logging.getLogger(__name__)


def _reid(settings: Settings, store: EventStore, devices: DeviceTable) -> ReidService:
    config = settings.reid
    spec = FACE_EMBEDDERS[config.embedder]
    if not config.enabled:
        return ReidService(
            store,
            None,
            name=spec.name,
            load_error="re-ID is disabled in the configuration",
            search_side=settings.analysis.max_side,
        )
    device = devices.device_for("zoo")

    def load() -> OnnxFaceEmbedder:
        embedder = OnnxFaceEmbedder(spec, config.models_dir, device)
        if config.threshold is not None:
            embedder.threshold = config.threshold
        return embedder

    reid = ReidService(
        store,
        load,
        name=spec.name,
        window_seconds=config.window_seconds,
        search_side=settings.analysis.max_side,
        devices=devices,
        device=device,
        models_dir=config.models_dir,
    )
    reid.load_blocking()
    return reid


def create_app(
    settings: Settings,
    *,
    detector: Detector | None = None,
    discovered: list[DiscoveredDevice] | None = None,
) -> web.Application:
    """Build the application. ``detector``/``discovered`` let tests inject real alternatives.

    Raises :class:`addon_server.devices.PlacementError` when strict placement cannot be met and
    :class:`addon_server.store.StorageError` when the data dir cannot hold the instance id.
    Everything else in ``settings`` was validated when it was loaded (``config.load``).
    """
    tracing.configure(settings.tracing)  # first: the HTTP sessions the services open are traced
    metrics = Metrics()
    devices = DeviceTable(settings.devices, discover() if discovered is None else discovered)
    # mlflow is imported only when a models:/ path is loaded
    model_registry = RegistrySource.of(settings.registry)
    detection = DetectionService(
        settings.detector,
        settings.batching,
        devices,
        metrics,
        detector=detector,
        model_registry=model_registry,
    )
    store = EventStore(
        settings.store.path,
        max_age_days=settings.store.max_age_days,
        max_events=settings.store.max_events,
    )
    reid = _reid(settings, store, devices)
    reasoner = Reasoner(
        settings.reasoning,
        device=devices.device_for("llm"),
        state_dir=settings.server.data_dir,
    )
    zoo = ZooService(
        settings.zoo,
        devices,
        settings.reid.models_dir,
        metrics,
        cotenants_busy=lambda: detection.batcher is not None and detection.batcher.busy,
        model_registry=model_registry,
    )
    services = Services(
        settings=settings,
        devices=devices,
        metrics=metrics,
        detection=detection,
        store=store,
        reid=reid,
        reasoner=reasoner,
        analyzer=Analyzer(
            detection,
            reid,
            reasoner,
            store,
            settings.analysis,
            settings.images,
            zoo=_enricher(settings, zoo),
            privacy=settings.privacy,
        ),
        zoo=zoo,
        instance_id=instance_id(settings.server.data_dir),
    )
    middlewares = [error_middleware, auth_middleware(settings.server.api_token)]
    if tracing.enabled():
        middlewares.insert(0, tracing.middleware)
    app = web.Application(client_max_size=settings.server.max_body_bytes, middlewares=middlewares)
    app[METRICS_KEY] = metrics
    app[SERVICES_KEY] = services
    api.register(app)
    store.listen(services.hub.publish)
    store.listen(lambda revision: metrics.revision_committed(revision.document))
    refiner = services.analyzer.refiner

    async def end_streams(_: web.Application) -> None:
        services.hub.close()  # before aiohttp waits for the open stream responses to end

    app.on_shutdown.append(end_streams)

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await store.open()
        await reasoner.start()
        await detection.start()
        await zoo.start()
        await refiner.start()
        yield
        await refiner.stop()  # marks unfinished refinements failed while the store is open
        await zoo.stop()
        await detection.stop()
        await reasoner.stop()
        await store.close()
        tracing.shutdown()

    app.cleanup_ctx.append(lifecycle)
    return app


def _enricher(settings: Settings, zoo: ZooService) -> Enricher:
    """The enrich stage: this process's zoo, or the zoo on the Ray cluster (``BACKEND=ray``)."""
    if settings.detector.backend != "ray":
        return zoo
    from addon_server.ray_serve.client import RayZoo

    return RayZoo(settings.detector.ray)
