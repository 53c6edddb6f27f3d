"""Binary sensors of the Vigil integration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from homeassistant.components.binary_sensor import BinarySensorEntity, BinarySensorEntityDescription
from homeassistant.components.binary_sensor.const import BinarySensorDeviceClass
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import (
    VigilCameraCoordinator,
    VigilConfigEntry,
    VigilServerCoordinator,
    VigilServerData,
)
from .entity import VigilEntity

PARALLEL_UPDATES = 0

CONNECTIVITY = BinarySensorEntityDescription(
    key="connectivity",
    device_class=BinarySensorDeviceClass.CONNECTIVITY,
    entity_category=EntityCategory.DIAGNOSTIC,
)


@dataclass(frozen=True, kw_only=True)
class VigilServerBinarySensorDescription(BinarySensorEntityDescription):
    """Describes a binary sensor of the add-on's device read from its /health."""

    value_fn: Callable[[VigilServerData], bool | None]


SERVER_BINARY_SENSORS: tuple[VigilServerBinarySensorDescription, ...] = (
    VigilServerBinarySensorDescription(
        key="local_only",
        translation_key="local_only",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda d: d.health.privacy.local_only if d.health.privacy else None,
    ),
    VigilServerBinarySensorDescription(
        key="blur_unknown_faces",
        translation_key="blur_unknown_faces",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda d: d.health.privacy.blur_unknown_faces if d.health.privacy else None,
    ),
)

THREAT = BinarySensorEntityDescription(
    key="threat",
    translation_key="threat",
    device_class=BinarySensorDeviceClass.SAFETY,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: VigilConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up Vigil binary sensors."""
    server = entry.runtime_data.server
    async_add_entities([VigilConnectivitySensor(server, CONNECTIVITY)])
    async_add_entities(VigilServerBinarySensor(server, d) for d in SERVER_BINARY_SENSORS)
    for subentry_id, camera in entry.runtime_data.cameras.items():
        async_add_entities([VigilThreatSensor(camera, THREAT)], config_subentry_id=subentry_id)


class VigilConnectivitySensor(VigilEntity[VigilServerCoordinator], BinarySensorEntity):
    """Whether the add-on answers: the one entity that stays available when it does not."""

    @property
    def available(self) -> bool:
        """Always available: it reports the connection itself."""
        return True

    @property
    def is_on(self) -> bool:
        """Return whether the add-on answered its last poll."""
        return self.coordinator.last_update_success


class VigilServerBinarySensor(VigilEntity[VigilServerCoordinator], BinarySensorEntity):
    """An option of the add-on, shown so automations and the user can see it is in force."""

    entity_description: VigilServerBinarySensorDescription

    @property
    def is_on(self) -> bool | None:
        """Return the option's state as the add-on last reported it."""
        return self.entity_description.value_fn(self.coordinator.data)


class VigilThreatSensor(VigilEntity[VigilCameraCoordinator], BinarySensorEntity):
    """On while the camera's latest event is marked `notify` by the add-on.

    The add-on decides `notify` from the camera's notify level, which the integration
    sends with every analysis; the sensor shows that decision as it is.
    """

    @property
    def is_on(self) -> bool | None:
        """Return whether the latest analysis is a threat."""
        if (event := self.coordinator.data) is None:
            return None
        return event.notify
