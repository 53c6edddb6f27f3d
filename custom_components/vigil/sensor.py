"""Sensors of the Vigil integration."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory, UnitOfInformation
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from .api import AnalysisEvent, Health, ZooDevice
from .const import RISK_LEVELS
from .coordinator import (
    VigilCameraCoordinator,
    VigilConfigEntry,
    VigilServerCoordinator,
    VigilServerData,
)
from .entity import VigilEntity

# The coordinators do all the talking.
PARALLEL_UPDATES = 0

MAX_STATE_LENGTH = 255
HEALTH_STATES = ["healthy", "degraded", "unhealthy"]


@dataclass(frozen=True, kw_only=True)
class VigilServerSensorDescription(SensorEntityDescription):
    """Describes a sensor of the add-on's device."""

    value_fn: Callable[[VigilServerData], StateType]
    attributes_fn: Callable[[VigilServerData], Mapping[str, Any] | None] | None = None


@dataclass(frozen=True, kw_only=True)
class VigilCameraSensorDescription(SensorEntityDescription):
    """Describes a sensor of a camera's device."""

    value_fn: Callable[[AnalysisEvent], StateType | datetime]


def _mib(nbytes: int | None) -> float | None:
    return None if nbytes is None else round(nbytes / 2**20, 1)


def _loaded_models(health: Health) -> dict[str, Any]:
    """The loaded models as attributes: what each is, where it runs and what it measures."""
    return {
        "models": [
            {
                "name": m.name,
                "kind": m.kind,
                "priority": m.priority,
                "device": m.device,
                "measured_mb": _mib(m.measured_bytes),
                "pinned": m.pinned,
            }
            for m in health.models
            if m.loaded
        ]
    }


SERVER_SENSORS: tuple[VigilServerSensorDescription, ...] = (
    VigilServerSensorDescription(
        key="status",
        translation_key="status",
        device_class=SensorDeviceClass.ENUM,
        options=HEALTH_STATES,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda d: d.health.status if d.health.status in HEALTH_STATES else None,
    ),
    VigilServerSensorDescription(
        key="models_loaded",
        translation_key="models_loaded",
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda d: d.health.models_loaded,
        attributes_fn=lambda d: _loaded_models(d.health),
    ),
)


def _gpu_value(gpu_id: str, attr: str) -> Callable[[VigilServerData], StateType]:
    def value(data: VigilServerData) -> StateType:
        for gpu in data.health.gpus:
            if gpu.id == gpu_id:
                result: int = getattr(gpu, attr)
                return result
        return None

    return value


def gpu_sensors(gpu_id: str) -> tuple[VigilServerSensorDescription, ...]:
    """Return the memory sensors of one GPU."""
    return (
        VigilServerSensorDescription(
            key=f"{gpu_id}_memory_used",
            translation_key="gpu_memory_used",
            translation_placeholders={"gpu": gpu_id},
            device_class=SensorDeviceClass.DATA_SIZE,
            native_unit_of_measurement=UnitOfInformation.BYTES,
            suggested_unit_of_measurement=UnitOfInformation.GIBIBYTES,
            suggested_display_precision=2,
            state_class=SensorStateClass.MEASUREMENT,
            entity_category=EntityCategory.DIAGNOSTIC,
            # Changes with every poll: off unless wanted.
            entity_registry_enabled_default=False,
            value_fn=_gpu_value(gpu_id, "used_bytes"),
        ),
        VigilServerSensorDescription(
            key=f"{gpu_id}_memory_budget",
            translation_key="gpu_memory_budget",
            translation_placeholders={"gpu": gpu_id},
            device_class=SensorDeviceClass.DATA_SIZE,
            native_unit_of_measurement=UnitOfInformation.BYTES,
            suggested_unit_of_measurement=UnitOfInformation.GIBIBYTES,
            suggested_display_precision=2,
            entity_category=EntityCategory.DIAGNOSTIC,
            value_fn=_gpu_value(gpu_id, "budget_bytes"),
        ),
    )


def _zoo_device[T](
    device: str, read: Callable[[ZooDevice], T]
) -> Callable[[VigilServerData], T | None]:
    """Read one device's zoo status (None while the add-on does not report that device)."""

    def value(data: VigilServerData) -> T | None:
        zoo = data.zoo.device(device) if data.zoo is not None else None
        return read(zoo) if zoo is not None else None

    return value


def _zoo_memory_attributes(zoo: ZooDevice) -> dict[str, Any]:
    return {
        "budget_mb": zoo.budget_mb,
        "available_mb": zoo.available_mb,
        "utilization_percent": zoo.utilization_percent,
        "zoo_mb": zoo.zoo_used_mb,
        "cotenants_mb": zoo.cotenants_mb,
        "loaded_models": [m.name for m in zoo.loaded_models],
        "pending_loads": list(zoo.pending_loads),
    }


def zoo_sensors(device: str) -> tuple[VigilServerSensorDescription, ...]:
    """Return the model-zoo sensors of one device (a GPU or the CPU).

    Memory is what the device's budget counts: the zoo's models and its co-tenants (the
    detector, the face embedder, the LLM), in the add-on's MiB.
    """
    return (
        VigilServerSensorDescription(
            key=f"zoo_{device}_memory",
            translation_key="zoo_memory",
            translation_placeholders={"device": device},
            device_class=SensorDeviceClass.DATA_SIZE,
            native_unit_of_measurement=UnitOfInformation.MEBIBYTES,
            suggested_display_precision=0,
            state_class=SensorStateClass.MEASUREMENT,
            entity_category=EntityCategory.DIAGNOSTIC,
            value_fn=_zoo_device(device, lambda z: z.used_mb),
            attributes_fn=_zoo_device(device, _zoo_memory_attributes),
        ),
        VigilServerSensorDescription(
            key=f"zoo_{device}_utilization",
            translation_key="zoo_utilization",
            translation_placeholders={"device": device},
            native_unit_of_measurement=PERCENTAGE,
            suggested_display_precision=1,
            state_class=SensorStateClass.MEASUREMENT,
            entity_category=EntityCategory.DIAGNOSTIC,
            value_fn=_zoo_device(device, lambda z: z.utilization_percent),
        ),
    )


CAMERA_SENSORS: tuple[VigilCameraSensorDescription, ...] = (
    VigilCameraSensorDescription(
        key="risk_score",
        translation_key="risk_score",
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        value_fn=lambda e: e.risk_score,
    ),
    VigilCameraSensorDescription(
        key="risk_level",
        translation_key="risk_level",
        device_class=SensorDeviceClass.ENUM,
        options=list(RISK_LEVELS),
        value_fn=lambda e: e.risk_level if e.risk_level in RISK_LEVELS else None,
    ),
    VigilCameraSensorDescription(
        key="person_count",
        translation_key="person_count",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda e: e.person_count,
    ),
    VigilCameraSensorDescription(
        key="vehicle_count",
        translation_key="vehicle_count",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda e: e.vehicle_count,
    ),
    VigilCameraSensorDescription(
        key="animal_count",
        translation_key="animal_count",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda e: e.animal_count,
    ),
    VigilCameraSensorDescription(
        key="last_summary",
        translation_key="last_summary",
        value_fn=lambda e: e.summary[:MAX_STATE_LENGTH] or None,
    ),
    VigilCameraSensorDescription(
        key="last_event",
        translation_key="last_event",
        device_class=SensorDeviceClass.TIMESTAMP,
        value_fn=lambda e: e.timestamp,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: VigilConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up Vigil sensors."""
    server = entry.runtime_data.server
    async_add_entities(VigilServerSensor(server, d) for d in SERVER_SENSORS)

    known: set[str] = set()

    @callback
    def _add_new_devices() -> None:
        """Add the sensors of GPUs and zoo devices the add-on reports for the first time."""
        data = server.data
        wanted = {f"gpu {gpu.id}": gpu_sensors(gpu.id) for gpu in data.health.gpus}
        if data.zoo is not None:
            wanted |= {f"zoo {z.device}": zoo_sensors(z.device) for z in data.zoo.devices}
        new = [key for key in wanted if key not in known]
        known.update(new)
        async_add_entities(VigilServerSensor(server, d) for key in new for d in wanted[key])

    _add_new_devices()
    entry.async_on_unload(server.async_add_listener(_add_new_devices))
    for subentry_id, camera in entry.runtime_data.cameras.items():
        async_add_entities(
            (VigilCameraSensor(camera, d) for d in CAMERA_SENSORS),
            config_subentry_id=subentry_id,
        )


class VigilServerSensor(VigilEntity[VigilServerCoordinator], SensorEntity):
    """A sensor of the add-on's device."""

    entity_description: VigilServerSensorDescription
    # Lists that change with every load: shown, not kept in the history.
    _unrecorded_attributes = frozenset({"models", "loaded_models", "pending_loads"})

    @property
    def native_value(self) -> StateType:
        """Return the sensor's value."""
        return self.entity_description.value_fn(self.coordinator.data)

    @property
    def extra_state_attributes(self) -> Mapping[str, Any] | None:
        """Return the sensor's attributes, where it has some."""
        if (attributes_fn := self.entity_description.attributes_fn) is None:
            return None
        return attributes_fn(self.coordinator.data)


class VigilCameraSensor(VigilEntity[VigilCameraCoordinator], SensorEntity):
    """A sensor of a camera's device: a field of its latest analysis."""

    entity_description: VigilCameraSensorDescription

    @property
    def native_value(self) -> StateType | datetime:
        """Return the sensor's value (unknown before the first analysis)."""
        if (event := self.coordinator.data) is None:
            return None
        return self.entity_description.value_fn(event)
