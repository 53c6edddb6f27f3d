"""Event entities of the Vigil integration: one per camera, fired on every analysis."""

from __future__ import annotations

from homeassistant.components.event import EventEntity, EventEntityDescription
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import (
    ATTR_EVENT_ID,
    ATTR_FACTORS,
    ATTR_NOTIFY,
    ATTR_PHASE,
    ATTR_REVISION,
    ATTR_SCORE,
    ATTR_SUMMARY,
    DOMAIN,
    RISK_LEVELS,
)
from .coordinator import VigilCameraCoordinator, VigilConfigEntry, enrichment_attributes
from .entity import VigilEntity

PARALLEL_UPDATES = 0

ATTR_CAMERA_ENTITY = "camera_entity"
ATTR_SNAPSHOT_ENTITY = "snapshot_entity"

RISK_EVENT = EventEntityDescription(
    key="risk_event",
    translation_key="risk_event",
    event_types=list(RISK_LEVELS),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: VigilConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up Vigil event entities."""
    for subentry_id, camera in entry.runtime_data.cameras.items():
        async_add_entities([VigilRiskEvent(camera, RISK_EVENT)], config_subentry_id=subentry_id)


class VigilRiskEvent(VigilEntity[VigilCameraCoordinator], EventEntity):
    """Fires once per phase of each analysis, with the risk level as its event type.

    An analysis fires with `phase: initial` (the rules' verdict) and, when the add-on's LLM
    refines it, again with `phase: refined` and `revision: 2` (same event id). The event
    stored before this entity started (read back at setup) is not fired: it happened while
    nobody was listening.
    """

    _last_fired: tuple[str, int] | None = None

    async def async_added_to_hass(self) -> None:
        """Take note of the latest event without firing it."""
        await super().async_added_to_hass()
        if self.coordinator.data is not None:
            self._last_fired = (self.coordinator.data.id, self.coordinator.data.revision)

    @callback
    def _handle_coordinator_update(self) -> None:
        """Fire for an analysis, or a revision of one, not seen before."""
        event = self.coordinator.data
        if (
            event is not None
            and (event.id, event.revision) != self._last_fired
            and event.risk_level in RISK_LEVELS
        ):
            self._last_fired = (event.id, event.revision)
            registry = er.async_get(self.hass)
            self._trigger_event(
                event.risk_level,
                {
                    ATTR_SCORE: event.risk_score,
                    ATTR_SUMMARY: event.summary,
                    ATTR_FACTORS: [f.as_dict() for f in event.factors],
                    ATTR_EVENT_ID: event.id,
                    ATTR_NOTIFY: event.notify,
                    ATTR_PHASE: event.phase,
                    ATTR_REVISION: event.revision,
                    ATTR_CAMERA_ENTITY: self.coordinator.camera_entity_id,
                    ATTR_SNAPSHOT_ENTITY: registry.async_get_entity_id(
                        "image", DOMAIN, f"{self.coordinator.unique_id_prefix}_snapshot"
                    ),
                    **enrichment_attributes(event.enrichments),
                },
            )
        super()._handle_coordinator_update()
