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
from addon_server.served import ServedModel
from addon_server.store import EventStore, os_storage_error
from addon_server.stream import EventHub
from addon_server.zoo.service import ZooService


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
    zoo: ZooService
    instance_id: str
    hub: EventHub = field(default_factory=EventHub)
    """The event stream's subscribers (``GET /v1/events/stream``)."""
    started: float = field(default_factory=time.monotonic)

    def served(self) -> list[ServedModel]:
        """Every model the add-on serves, the detector first: one list for /health,
        /v1/models, metrics and the device budget."""
        models: list[ServedModel] = [self.detection, self.reid]
        llm = self.reasoner.served()
        if llm is not None:
            models.append(llm)
        models.extend(self.zoo.served())
        return models

    def book_llm_memory(self) -> None:
        """Put the LLM server's measured memory in its device's ledger (a zoo co-tenant)."""
        llm = self.reasoner.served()
        measured = llm.measured_bytes() if llm is not None else None
        device = self.devices.device_for("llm")
        if measured:
            self.devices.reserve(device, "llm", measured)
        else:
            self.devices.release(device, "llm")

    def models(self) -> list[dict[str, Any]]:
        """Every model the add-on runs, as /health and /v1/models list them."""
        self.book_llm_memory()
        return [model.info().as_json() for model in self.served()]


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
