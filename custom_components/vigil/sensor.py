"""Sensors of the Vigil integration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory, UnitOfInformation
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from .api import AnalysisEvent, Health
from .const import RISK_LEVELS
from .coordinator import VigilCameraCoordinator, VigilConfigEntry, VigilServerCoordinator
from .entity import VigilEntity

# The coordinators do all the talking.
PARALLEL_UPDATES = 0

MAX_STATE_LENGTH = 255
HEALTH_STATES = ["healthy", "degraded", "unhealthy"]


@dataclass(frozen=True, kw_only=True)
class VigilServerSensorDescription(SensorEntityDescription):
    """Describes a sensor of the add-on's device."""

    value_fn: Callable[[Health], StateType]


@dataclass(frozen=True, kw_only=True)
class VigilCameraSensorDescription(SensorEntityDescription):
    """Describes a sensor of a camera's device."""

    value_fn: Callable[[AnalysisEvent], StateType | datetime]


SERVER_SENSORS: tuple[VigilServerSensorDescription, ...] = (
    VigilServerSensorDescription(
        key="status",
        translation_key="status",
        device_class=SensorDeviceClass.ENUM,
        options=HEALTH_STATES,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda h: h.status if h.status in HEALTH_STATES else None,
    ),
    VigilServerSensorDescription(
        key="models_loaded",
        translation_key="models_loaded",
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda h: h.models_loaded,
    ),
)


def _gpu_value(gpu_id: str, attr: str) -> Callable[[Health], StateType]:
    def value(health: Health) -> StateType:
        for gpu in health.gpus:
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

    known_gpus: set[str] = set()

    @callback
    def _add_new_gpus() -> None:
        """Add the memory sensors of GPUs the add-on reports for the first time."""
        new = [gpu.id for gpu in server.data.gpus if gpu.id not in known_gpus]
        known_gpus.update(new)
        async_add_entities(
            VigilServerSensor(server, d) for gpu_id in new for d in gpu_sensors(gpu_id)
        )

    _add_new_gpus()
    entry.async_on_unload(server.async_add_listener(_add_new_gpus))
    for subentry_id, camera in entry.runtime_data.cameras.items():
        async_add_entities(
            (VigilCameraSensor(camera, d) for d in CAMERA_SENSORS),
            config_subentry_id=subentry_id,
        )


class VigilServerSensor(VigilEntity[VigilServerCoordinator], SensorEntity):
    """A sensor of the add-on's device."""

    entity_description: VigilServerSensorDescription

    @property
    def native_value(self) -> StateType:
        """Return the sensor's value."""
        return self.entity_description.value_fn(self.coordinator.data)


class VigilCameraSensor(VigilEntity[VigilCameraCoordinator], SensorEntity):
    """A sensor of a camera's device: a field of its latest analysis."""

    entity_description: VigilCameraSensorDescription

    @property
    def native_value(self) -> StateType | datetime:
        """Return the sensor's value (unknown before the first analysis)."""
        if (event := self.coordinator.data) is None:
            return None
        return self.entity_description.value_fn(event)
