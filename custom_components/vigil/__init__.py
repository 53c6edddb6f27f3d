"""The Vigil integration: camera risk analysis by the Vigil add-on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from homeassistant.const import CONF_API_TOKEN, CONF_HOST, CONF_PORT, CONF_SSL, STATE_ON, Platform
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.event import async_track_state_change_event
from homeassistant.helpers.typing import ConfigType

from .api import AnalysisEvent, VigilClient
from .const import (
    CONF_REQUEST_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
    DOMAIN,
    HEALTH_TIMEOUT,
    SUBENTRY_CAMERA,
)
from .coordinator import (
    VigilCameraCoordinator,
    VigilConfigEntry,
    VigilRuntimeData,
    VigilServerCoordinator,
)
from .repairs import async_clear_issues, async_sync_issues
from .services import async_setup_services
from .stream import VigilEventStream

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)

PLATFORMS = [
    Platform.BINARY_SENSOR,
    Platform.EVENT,
    Platform.IMAGE,
    Platform.SENSOR,
]


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Set up the Vigil actions."""
    async_setup_services(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: VigilConfigEntry) -> bool:
    """Set up a Vigil add-on and its cameras from a config entry."""
    client = VigilClient(
        async_get_clientsession(hass),
        host=entry.data[CONF_HOST],
        port=entry.data[CONF_PORT],
        token=entry.data.get(CONF_API_TOKEN),
        ssl=entry.data.get(CONF_SSL, False),
        request_timeout=entry.options.get(CONF_REQUEST_TIMEOUT, DEFAULT_REQUEST_TIMEOUT),
        health_timeout=HEALTH_TIMEOUT,
    )
    server = VigilServerCoordinator(hass, entry, client)
    await server.async_config_entry_first_refresh()
    server.device_id = (
        dr.async_get(hass)
        .async_get_or_create(config_entry_id=entry.entry_id, **server.device_info)
        .id
    )

    runtime = VigilRuntimeData(client=client, server=server)
    for subentry in entry.subentries.values():
        if subentry.subentry_type == SUBENTRY_CAMERA:
            runtime.cameras[subentry.subentry_id] = VigilCameraCoordinator(
                hass, entry, subentry, client, server
            )
    await asyncio.gather(*(c.async_config_entry_first_refresh() for c in runtime.cameras.values()))
    entry.runtime_data = runtime

    @callback
    def _sync_issues() -> None:
        async_sync_issues(hass, entry)

    _sync_issues()
    entry.async_on_unload(server.async_add_listener(_sync_issues))

    for coordinator in runtime.cameras.values():
        if coordinator.trigger_entity_ids:
            entry.async_on_unload(
                async_track_state_change_event(
                    hass, coordinator.trigger_entity_ids, _trigger_handler(coordinator)
                )
            )

    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)

    @callback
    def _dispatch(event: AnalysisEvent) -> None:
        for coordinator in runtime.cameras.values():
            if coordinator.camera_id == event.camera:
                coordinator.async_publish(event)

    @callback
    def _reauth() -> None:
        entry.async_start_reauth(hass)

    runtime.stream = VigilEventStream(hass, client, _dispatch, _reauth)
    runtime.stream.async_start(entry)
    # Subentries added, changed or removed, and options changed: set up again.
    entry.async_on_unload(entry.add_update_listener(_async_update_listener))
    return True


def _trigger_handler(
    coordinator: VigilCameraCoordinator,
) -> Callable[[Event[EventStateChangedData]], None]:
    """Return the state listener that analyses a camera when a trigger turns on."""

    @callback
    def _handle(event: Event[EventStateChangedData]) -> None:
        new, old = event.data["new_state"], event.data["old_state"]
        if new is None or new.state != STATE_ON:
            return
        if old is not None and old.state == STATE_ON:
            return
        coordinator.async_trigger()

    return _handle


async def _async_update_listener(hass: HomeAssistant, entry: VigilConfigEntry) -> None:
    """Reload the entry after its subentries or options changed."""
    await hass.config_entries.async_reload(entry.entry_id)


async def async_unload_entry(hass: HomeAssistant, entry: VigilConfigEntry) -> bool:
    """Unload a config entry; its repair issues stay unless it is being disabled.

    A reload keeps them, so that one the user ignored is not raised again.
    """
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded and entry.disabled_by is not None:
        async_clear_issues(hass, entry)
    return unloaded


async def async_remove_entry(hass: HomeAssistant, entry: VigilConfigEntry) -> None:
    """Remove the repair issues of a deleted entry."""
    async_clear_issues(hass, entry)
