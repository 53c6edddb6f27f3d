"""Diagnostics of the Vigil integration.

Redacted: the API token, and everything that can name an enrolled person. The add-on
puts the names in `reid[].person_name`, and also writes them into free text (the identity
factor's `detail`, the `summary` and `reasoning`, which the language model may phrase
freely), so those fields are redacted by key, not by searching for the names in them: a
name the model shortened or spelled differently would slip past a search.

The model zoo's enrichments can name or single out a person or a household too: a number
plate's `text`, a face's `age_range`, `age_estimate` and `gender`, and a body's appearance
`vector` (what re-identifies someone across cameras) are redacted by key as well. The zoo
status and the models' memory figures name nobody and stay.
"""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_API_TOKEN
from homeassistant.core import HomeAssistant

from .coordinator import VigilConfigEntry

TO_REDACT = {CONF_API_TOKEN, "token", "Authorization"}
EVENT_TO_REDACT = {
    "person_name",
    "detail",
    "summary",
    "reasoning",
    "text",
    "age_range",
    "age_estimate",
    "gender",
    "vector",
    "embedding",
}


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
            "health": dict(server.data.health.raw) if server.data is not None else None,
            "zoo": dict(server.data.zoo.raw)
            if server.data is not None and server.data.zoo is not None
            else None,
            "repair_issues": sorted(runtime.issues),
        },
        "cameras": {
            camera.subentry.title: {
                "subentry": dict(camera.subentry.data),
                "camera_id": camera.camera_id,
                "busy": camera.busy,
                "last_event": async_redact_data(dict(camera.data.raw), EVENT_TO_REDACT)
                if camera.data is not None
                else None,
            }
            for camera in runtime.cameras.values()
        },
    }
