"""Which compute devices exist, how much memory each may use, and where each service runs.

Discovery asks torch (when it is installed) for CUDA GPUs; the CPU is always present. The user's
budget table says how many GB each device may hold for Vigil and which services
(``detector``, ``llm``, ``zoo``) it hosts. A service placed on a GPU that is not there falls back
to the CPU with one warning — the homelab keeps detecting when a card is pulled — unless
``strict`` asks for a refusal instead. Memory in use is a ledger that the loaders fill in, so
/health and the zoo's budget checks read the same numbers.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from addon_server.config import SERVICES, DevicesSettings

_LOGGER = logging.getLogger(__name__)
GIB = 1024**3
DEFAULT_CPU_BUDGET_GB = 8.0


class PlacementError(Exception):
    """A service was assigned to a device that is not present and placement is strict."""


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    """A device as the hardware reports it."""

    device_id: str
    kind: str
    name: str
    total_bytes: int


@dataclass(slots=True)
class Device:
    """A device with its budget and what Vigil has put on it."""

    device_id: str
    kind: str
    name: str
    present: bool
    total_bytes: int
    budget_bytes: int
    services: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one service runs, and why it runs there."""

    service: str
    device: str
    requested_device: str
    fallback: bool
    reason: str | None


def discover() -> list[DiscoveredDevice]:
    """Return the CPU and every CUDA GPU torch can see (none when torch is absent)."""
    found = [DiscoveredDevice("cpu", "cpu", "CPU", _system_memory_bytes())]
    try:
        import torch
    except ImportError:
        return found
    try:
        if not torch.cuda.is_available():
            return found
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            found.append(
                DiscoveredDevice(f"cuda:{index}", "cuda", str(props.name), int(props.total_memory))
            )
    except RuntimeError as err:  # a broken driver must not stop the CPU path
        _LOGGER.warning("CUDA discovery failed, using the CPU only: %s", err)
    return found


def _system_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class DeviceTable:
    """The per-device budget table, the placement of services and the memory ledger."""

    def __init__(self, settings: DevicesSettings, discovered: list[DiscoveredDevice]) -> None:
        self._lock = threading.Lock()
        self._ledger: dict[tuple[str, str], int] = {}
        self.devices: dict[str, Device] = {}
        present = {d.device_id: d for d in discovered}
        configured = {entry.device_id: entry for entry in settings.devices}
        for device_id, found in present.items():
            entry = configured.get(device_id)
            default_gb = (
                DEFAULT_CPU_BUDGET_GB if found.kind == "cpu" else settings.default_vram_budget_gb
            )
            budget_gb = entry.budget_gb if entry and entry.budget_gb is not None else default_gb
            budget = int(budget_gb * GIB) if budget_gb is not None else found.total_bytes
            self.devices[device_id] = Device(
                device_id, found.kind, found.name, True, found.total_bytes, budget
            )
        for device_id, entry in configured.items():
            if device_id not in self.devices:
                self.devices[device_id] = Device(
                    device_id, "cuda", "not present", False, 0, int((entry.budget_gb or 0) * GIB)
                )
        self.placements: dict[str, Placement] = {}
        for service in SERVICES:
            requested = next((e.device_id for e in settings.devices if service in e.services), None)
            self.placements[service] = self._place(service, requested, settings.strict)
        for placement in self.placements.values():
            self.devices[placement.device].services.append(placement.service)

    def _place(self, service: str, requested: str | None, strict: bool) -> Placement:
        if requested is None:
            gpus = [d for d in self.devices.values() if d.kind == "cuda" and d.present]
            chosen = gpus[0].device_id if gpus else "cpu"
            return Placement(service, chosen, chosen, False, None)
        if self.devices[requested].present:
            return Placement(service, requested, requested, False, None)
        reason = f"{requested} is not present"
        if strict:
            raise PlacementError(
                f"devices.{requested}.services: {service} is placed on {requested}, "
                "which is not present (strict placement)"
            )
        _LOGGER.warning("%s; %s falls back to the CPU", reason, service)
        return Placement(service, "cpu", requested, True, reason)

    def device_for(self, service: str) -> str:
        return self.placements[service].device

    def reserve(self, device_id: str, owner: str, nbytes: int) -> None:
        """Record ``owner`` holding ``nbytes`` on ``device_id`` (replacing its last figure)."""
        with self._lock:
            self._ledger[(device_id, owner)] = max(0, int(nbytes))

    def release(self, device_id: str, owner: str) -> None:
        with self._lock:
            self._ledger.pop((device_id, owner), None)

    def used_bytes(self, device_id: str, *, exclude: str | None = None) -> int:
        """Bytes booked on ``device_id`` (all owners, or all but ``exclude``)."""
        with self._lock:
            return sum(
                n
                for (dev, owner), n in self._ledger.items()
                if dev == device_id and owner != exclude
            )

    def free_budget_bytes(self, device_id: str) -> int:
        return self.devices[device_id].budget_bytes - self.used_bytes(device_id)

    def as_health(self) -> list[dict[str, Any]]:
        return [
            {
                "id": d.device_id,
                "kind": d.kind,
                "name": d.name,
                "present": d.present,
                "budget_bytes": d.budget_bytes,
                "used_bytes": self.used_bytes(d.device_id),
                "total_bytes": d.total_bytes,
                "services": sorted(d.services),
            }
            for d in self.devices.values()
        ]

    def placements_as_health(self) -> dict[str, dict[str, Any]]:
        return {
            p.service: {
                "device": p.device,
                "requested_device": p.requested_device,
                "fallback": p.fallback,
                "reason": p.reason,
            }
            for p in self.placements.values()
        }
