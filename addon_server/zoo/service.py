"""The zoo as the add-on uses it: one manager per device, and the enrich stage.

Each registered model runs on the device its service is placed on (``devices.py``); models on
the same device share one :class:`ZooManager` and its budget, devices share nothing. The
detector, the face embedder and the LLM book their bytes in the same device ledger, so the zoo
sees them as co-tenants, and the zoo books its own total there under :data:`LEDGER_OWNER`.

:meth:`ZooService.enrich` is the analysis' enrich stage: it runs every installed model that the
frame's detections trigger (the seeds' table in ``registry.py``), all at once, each under the
configured admission deadline. A model that cannot get memory in time is *skipped with a
reason* (``zoo_busy``) — the analysis still answers with what it has.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from addon_server.config import ZooSettings
from addon_server.devices import DeviceTable
from addon_server.errors import ModelNotInstalledError
from addon_server.metrics import Metrics
from addon_server.served import ModelInfo
from addon_server.tracing import stage
from addon_server.zoo.interface import (
    Enrichment,
    Frame,
    ModelLoadError,
    ModelState,
    ZooBusyError,
)
from addon_server.zoo.manager import ZooManager
from addon_server.zoo.mlflow_source import RegistrySource
from addon_server.zoo.registry import SUSPICIOUS_POSE, ModelSpec, Registry, configured

_LOGGER = logging.getLogger(__name__)
LEDGER_OWNER = "zoo"
SUSPICIOUS_POSTURES = frozenset({"crouching", "lying"})
POSE_WINDOW = 3
"""Frames of one camera the action trigger looks back over (suspicious in 2 of the last 3)."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """Why a triggered model gave no result for this frame."""

    reason: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message}


@dataclass(slots=True)
class EnrichOutcome:
    """What the enrich stage adds to an analysis."""

    results: dict[str, Enrichment] = field(default_factory=dict)
    skipped: dict[str, Skipped] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    missing_stages: list[str] = field(default_factory=list)
    """Stages that did not answer (a Ray host gone): the analysis is ``degraded``."""

    def as_json(self) -> dict[str, Any]:
        return {
            "results": {name: result.as_json() for name, result in self.results.items()},
            "skipped": {name: skip.as_json() for name, skip in self.skipped.items()},
        }

    def context_lines(self) -> list[str]:
        lines: list[str] = []
        for result in self.results.values():
            lines.extend(result.context_lines())
        return lines


class Enricher(Protocol):
    """The enrich stage as the pipeline calls it: this zoo, or the zoo on a Ray cluster."""

    async def enrich(self, frame: Frame, models: Iterable[str] | None = None) -> EnrichOutcome:
        """Run ``models`` (default: what the frame triggers); never raises for a model."""
        ...


class ZooModelHandle:
    """One zoo model in the served-model list."""

    def __init__(self, manager: ZooManager, name: str, deadline_s: float) -> None:
        self.manager = manager
        self._name = name
        self.deadline_s = deadline_s

    @property
    def name(self) -> str:
        return self._name

    def info(self) -> ModelInfo:
        entry = self.manager.entry(self._name)
        spec = entry.spec
        return ModelInfo(
            spec.name,
            "zoo",
            spec.requires[0] if spec.requires else "opencv",
            self.manager.device,
            str(entry.state),
            entry.state is not ModelState.NOT_INSTALLED,
            measured_bytes=entry.measured,
            error=entry.error,
            priority=spec.priority.name.lower(),
            category=spec.category,
            estimated_bytes=spec.estimated_bytes,
            accounted_bytes=entry.accounted if entry.holds_bytes else 0,
            refcount=entry.refcount,
            pinned=entry.pinned,
            unload_pending=entry.evicting and entry.state is ModelState.LOADED,
            registry=entry.source.as_json() if entry.source is not None else None,
        )

    async def load(self, *, pin: bool | None = None) -> None:
        await self.manager.load(self._name, pin=pin, deadline_s=self.deadline_s)

    async def unload(self) -> None:
        await self.manager.unload(self._name)


class UnknownModelError(KeyError):
    """No model of that name is registered."""


class ZooService:
    """Every device's zoo, and the enrich stage."""

    def __init__(
        self,
        settings: ZooSettings,
        devices: DeviceTable,
        models_dir: Path,
        metrics: Metrics,
        registry: Registry | None = None,
        cotenants_busy: Callable[[], bool] = lambda: False,
        model_registry: RegistrySource | None = None,
    ) -> None:
        self.settings = settings
        self.devices = devices
        self.models_dir = models_dir
        self.registry = registry if registry is not None else Registry()
        self._postures: dict[str, deque[bool]] = defaultdict(lambda: deque(maxlen=POSE_WINDOW))
        specs = configured(
            (s for s in self.registry.specs.values() if s.name not in settings.disabled_models),
            settings,
        )
        by_device: dict[str, list[ModelSpec]] = defaultdict(list)
        for spec in specs:
            by_device[devices.device_for(spec.service)].append(spec)
        self.managers: dict[str, ZooManager] = {}
        for device, group in by_device.items():
            self.managers[device] = ZooManager(
                device,
                group,
                budget_bytes=devices.devices[device].budget_bytes,
                models_dir=models_dir,
                cotenant_bytes=self._cotenants(device),
                margin_bytes=settings.margin_bytes,
                metrics=metrics,
                on_change=self._book,
                cotenants_busy=cotenants_busy,
                registry=model_registry,
            )
        self._where = {name: m for m in self.managers.values() for name in m.entries}

    def _cotenants(self, device: str) -> Any:
        return lambda: self.devices.used_bytes(device, exclude=LEDGER_OWNER)

    def _book(self, device: str, nbytes: int) -> None:
        self.devices.reserve(device, LEDGER_OWNER, nbytes)

    def manager_for(self, name: str) -> ZooManager:
        try:
            return self._where[name]
        except KeyError:
            known = ", ".join(sorted(self._where))
            raise UnknownModelError(f"no zoo model {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return list(self._where)

    async def start(self) -> None:
        if not self.settings.enabled:
            return
        for manager in self.managers.values():
            await manager.prime_runtimes()
            wanted = [n for n in self.settings.preload if n in manager.entries]
            wanted += [n for n, e in manager.entries.items() if e.spec.preload and n not in wanted]
            if wanted:
                started = await manager.preload(wanted)
                _LOGGER.info("zoo on %s: preloaded %s", manager.device, ", ".join(started))

    async def stop(self) -> None:
        await asyncio.gather(*(m.close() for m in self.managers.values()))

    # -- running models ---------------------------------------------------------------------

    async def run(self, name: str, frame: Frame, *, deadline_s: float | None = None) -> Enrichment:
        """Run one model on one frame (raises the zoo's typed errors)."""
        manager = self.manager_for(name)
        deadline = self.settings.deadline_s if deadline_s is None else deadline_s
        async with manager.use(name, deadline_s=deadline) as model:
            return await asyncio.to_thread(model.infer, frame)

    def triggered(self, frame: Frame) -> list[str]:
        """Installed, enabled models the frame's detections (and pose history) trigger."""
        classes = {d.class_name for d in frame.detections}
        if frame.camera is not None and self._suspicious(frame.camera):
            classes.add(SUSPICIOUS_POSE)
        return [
            spec.name
            for spec in self.registry.triggered_by(classes)
            if spec.name in self._where
            and self._where[spec.name].entry(spec.name).state is not ModelState.NOT_INSTALLED
        ]

    async def enrich(self, frame: Frame, models: Iterable[str] | None = None) -> EnrichOutcome:
        """Run ``models`` (default: what the frame triggers) at once; never raises for a model."""
        outcome = EnrichOutcome()
        if not self.settings.enabled:
            return outcome
        names = list(models) if models is not None else self.triggered(frame)

        async def one(name: str) -> None:
            with stage(f"enrich {name}", outcome.timings_ms, key=name):
                try:
                    outcome.results[name] = await self.run(name, frame)
                except ZooBusyError as err:
                    outcome.skipped[name] = Skipped("zoo_busy", f"{err.reason}: {err}")
                except ModelNotInstalledError as err:
                    outcome.skipped[name] = Skipped("not_installed", str(err))
                except ModelLoadError as err:
                    outcome.skipped[name] = Skipped("load_failed", str(err))
                except Exception as err:  # a model's bug must not cost the analysis its answer
                    _LOGGER.exception("zoo model %s failed on a frame", name)
                    outcome.skipped[name] = Skipped("error", f"{type(err).__name__}: {err}")

        await asyncio.gather(*(one(n) for n in names))
        if frame.camera is not None:
            self._remember_postures(frame.camera, outcome)
        return outcome

    def _remember_postures(self, camera: str, outcome: EnrichOutcome) -> None:
        pose = outcome.results.get("pose")
        if pose is None:
            return
        postures = set(getattr(pose, "postures", ()))
        self._postures[camera].append(bool(postures & SUSPICIOUS_POSTURES))

    def _suspicious(self, camera: str) -> bool:
        recent = self._postures.get(camera)
        return recent is not None and sum(recent) >= 2

    # -- what it reports --------------------------------------------------------------------

    def served(self) -> list[ZooModelHandle]:
        """Every zoo model as a served model (/v1/models, /health, load/unload/pin)."""
        return [
            ZooModelHandle(m, name, self.settings.deadline_s)
            for m in self.managers.values()
            for name in m.entries
        ]

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.settings.enabled,
            "devices": [m.get_status() for m in self.managers.values()],
        }
