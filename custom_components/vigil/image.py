"""Image entities of the Vigil integration: each camera's last annotated snapshot."""

from __future__ import annotations

from homeassistant.components.image import ImageEntity, ImageEntityDescription
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .api import VigilError
from .const import LOGGER
from .coordinator import VigilCameraCoordinator, VigilConfigEntry
from .entity import VigilEntity

PARALLEL_UPDATES = 0

SNAPSHOT = ImageEntityDescription(key="snapshot", translation_key="snapshot")


async def async_setup_entry(
    hass: HomeAssistant,
    entry: VigilConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up Vigil image entities."""
    for subentry_id, camera in entry.runtime_data.cameras.items():
        async_add_entities([VigilSnapshotImage(hass, camera)], config_subentry_id=subentry_id)


class VigilSnapshotImage(VigilEntity[VigilCameraCoordinator], ImageEntity):
    """The annotated snapshot of the camera's latest analysis, fetched when shown."""

    _attr_content_type = "image/jpeg"

    def __init__(self, hass: HomeAssistant, coordinator: VigilCameraCoordinator) -> None:
        """Initialize the entity."""
        VigilEntity.__init__(self, coordinator, SNAPSHOT)
        ImageEntity.__init__(self, hass)
        self._update_from_event()

    @callback
    def _update_from_event(self) -> None:
        event = self.coordinator.data
        self._attr_image_last_updated = event.timestamp if event is not None else None

    @callback
    def _handle_coordinator_update(self) -> None:
        """Point at the new event's snapshot."""
        self._update_from_event()
        super()._handle_coordinator_update()

    async def async_image(self) -> bytes | None:
        """Return the snapshot's bytes, or None without an event or on failure."""
        if (event := self.coordinator.data) is None:
            return None
        try:
            return await self.coordinator.async_snapshot(event.id)
        except VigilError as err:
            LOGGER.debug("Snapshot of event %s not available: %s", event.id, err)
            return None
