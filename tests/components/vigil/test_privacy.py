"""The add-on's privacy options as entities: "Local-only mode" and "Face blurring"."""

from __future__ import annotations

from typing import Any
from unittest.mock import MagicMock

import pytest
from custom_components.vigil.api import Health
from custom_components.vigil.const import HEALTH_INTERVAL
from freezegun.api import FrozenDateTimeFactory
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNKNOWN, EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from .conftest import load_json

LOCAL_ONLY = "binary_sensor.vigil_local_only_mode"
FACE_BLURRING = "binary_sensor.vigil_face_blurring"


def _with_privacy(**privacy: bool) -> dict[str, Any]:
    health: dict[str, Any] = load_json("health.json")
    return health | {"privacy": health["privacy"] | privacy}


async def test_privacy_entities_follow_health(
    hass: HomeAssistant,
    entity_registry: er.EntityRegistry,
    init_integration: MockConfigEntry,
    mock_vigil_client: MagicMock,
    freezer: FrozenDateTimeFactory,
) -> None:
    """The recorded add-on runs with both options off; turning one on shows at the next poll."""
    for entity_id in (LOCAL_ONLY, FACE_BLURRING):
        assert hass.states.get(entity_id).state == STATE_OFF
        entry = entity_registry.async_get(entity_id)
        assert entry is not None
        assert entry.entity_category is EntityCategory.DIAGNOSTIC
    assert hass.states.get(LOCAL_ONLY).attributes["friendly_name"] == "Vigil Local-only mode"
    assert hass.states.get(FACE_BLURRING).attributes["friendly_name"] == "Vigil Face blurring"

    mock_vigil_client.health.return_value = Health.from_dict(_with_privacy(local_only=True))
    freezer.tick(HEALTH_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert hass.states.get(LOCAL_ONLY).state == STATE_ON
    assert hass.states.get(FACE_BLURRING).state == STATE_OFF

    mock_vigil_client.health.return_value = Health.from_dict(
        _with_privacy(local_only=True, blur_unknown_faces=True)
    )
    freezer.tick(HEALTH_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert hass.states.get(FACE_BLURRING).state == STATE_ON


@pytest.mark.parametrize(
    "health_document",
    [{k: v for k, v in load_json("health.json").items() if k != "privacy"}],
)
async def test_an_add_on_without_privacy_options_leaves_them_unknown(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """An add-on from before the options says nothing: the entities do not guess."""
    assert hass.states.get(LOCAL_ONLY).state == STATE_UNKNOWN
    assert hass.states.get(FACE_BLURRING).state == STATE_UNKNOWN
