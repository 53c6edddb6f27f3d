"""The services one add-on process runs, built once by the app factory and shared by handlers.

Kept apart from ``app.py`` so the ``api`` handlers can reach the services without importing the
factory that imports them.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from addon_server.config import Settings
from addon_server.detector.service import DetectionService
from addon_server.devices import DeviceTable
from addon_server.metrics import Metrics
from addon_server.pipeline import Analyzer
from addon_server.reasoning.reasoner import Reasoner
from addon_server.reid.gallery import ReidService
from addon_server.store import EventStore, os_storage_error


@dataclass
class Services:
    """Everything a request handler may use."""

    settings: Settings
    devices: DeviceTable
    metrics: Metrics
    detection: DetectionService
    store: EventStore
    reid: ReidService
    reasoner: Reasoner
    analyzer: Analyzer
    instance_id: str
    started: float = field(default_factory=time.monotonic)

    def models(self) -> list[dict[str, Any]]:
        """Every model the add-on runs, as /health and /v1/models list them."""
        return [
            self.detection.health(),
            self.reid.health(self.devices.device_for("zoo")),
        ]


SERVICES_KEY = web.AppKey("services", Services)


def instance_id(data_dir: Path) -> str:
    """A stable id for this installation (Home Assistant's unique id for the config entry).

    Raises :class:`StorageError` when the data dir cannot hold it (read-only, not a directory).
    """
    path = data_dir / "instance_id"
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    except OSError as err:
        raise os_storage_error(err, data_dir) from err
    if existing:
        return existing
    new_id = uuid.uuid4().hex
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(new_id + "\n", encoding="utf-8")
    except OSError as err:
        raise os_storage_error(err, data_dir) from err
    return new_id
