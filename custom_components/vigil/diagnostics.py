"""Diagnostics of the Vigil integration (the API token is redacted)."""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_API_TOKEN
from homeassistant.core import HomeAssistant

from .coordinator import VigilConfigEntry

TO_REDACT = {CONF_API_TOKEN, "token", "Authorization"}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: VigilConfigEntry
) -> dict[str, Any]:
    """Return diagnostics for a config entry."""
    runtime = entry.runtime_data
    server = runtime.server
    return {
        "entry": {
            "data": async_redact_data(dict(entry.data), TO_REDACT),
            "options": dict(entry.options),
        },
        "server": {
            "last_update_success": server.last_update_success,
            "health": dict(server.data.raw) if server.data is not None else None,
            "repair_issues": sorted(runtime.issues),
        },
        "cameras": {
            camera.subentry.title: {
                "subentry": dict(camera.subentry.data),
                "camera_id": camera.camera_id,
                "busy": camera.busy,
                "last_event": dict(camera.data.raw) if camera.data is not None else None,
            }
            for camera in runtime.cameras.values()
        },
    }
