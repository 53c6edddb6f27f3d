"""The one base class of Vigil entities."""

from __future__ import annotations

from homeassistant.core import callback
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .coordinator import VigilCameraCoordinator, VigilServerCoordinator


class VigilEntity[CoordinatorT: VigilServerCoordinator | VigilCameraCoordinator](
    CoordinatorEntity[CoordinatorT]
):
    """A Vigil entity: on the add-on's device or on a camera's, unavailable with the add-on."""

    _attr_has_entity_name = True

    def __init__(self, coordinator: CoordinatorT, description: EntityDescription) -> None:
        """Initialize the entity."""
        super().__init__(coordinator)
        self.entity_description = description
        self._attr_unique_id = f"{coordinator.unique_id_prefix}_{description.key}"
        self._attr_device_info = coordinator.device_info

    @property
    def available(self) -> bool:
        """Return whether the add-on answers (and this entity's data is there)."""
        return self.coordinator.server_available and super().available

    async def async_added_to_hass(self) -> None:
        """Follow the add-on's availability too."""
        await super().async_added_to_hass()
        self.async_on_remove(self.coordinator.async_add_server_listener(self._handle_server_update))

    @callback
    def _handle_server_update(self) -> None:
        """Write the state when the add-on comes or goes."""
        self.async_write_ha_state()
