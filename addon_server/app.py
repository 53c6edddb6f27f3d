"""The app factory: builds the services once, registers the API, starts and stops them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from addon_server import api
from addon_server.api.auth import auth_middleware
from addon_server.api.errors import METRICS_KEY, error_middleware
from addon_server.config import Settings
from addon_server.detector.base import Detector
from addon_server.detector.service import DetectionService
from addon_server.devices import DeviceTable, DiscoveredDevice, discover
from addon_server.metrics import Metrics
from addon_server.services import SERVICES_KEY, Services, instance_id


def create_app(
    settings: Settings,
    *,
    detector: Detector | None = None,
    discovered: list[DiscoveredDevice] | None = None,
) -> web.Application:
    """Build the application. ``detector``/``discovered`` let tests inject real alternatives.

    Raises :class:`addon_server.devices.PlacementError` when strict placement cannot be met.
    """
    metrics = Metrics()
    devices = DeviceTable(settings.devices, discover() if discovered is None else discovered)
    detection = DetectionService(
        settings.detector, settings.batching, devices, metrics, detector=detector
    )
    services = Services(
        settings=settings,
        devices=devices,
        metrics=metrics,
        detection=detection,
        instance_id=instance_id(settings.server.data_dir),
    )
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[error_middleware, auth_middleware(settings.server.api_token)],
    )
    app[METRICS_KEY] = metrics
    app[SERVICES_KEY] = services
    api.register(app)

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await detection.start()
        yield
        await detection.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
