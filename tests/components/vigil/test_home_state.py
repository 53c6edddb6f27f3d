"""Home state as evidence: the entities picked in the options are read, with their real
states, when a camera is analysed, and sent to the add-on as `home_state`."""

from __future__ import annotations

from typing import Any
from unittest.mock import MagicMock

import pytest
from custom_components.vigil.const import (
    CONF_ALARM_ENTITY,
    CONF_DOOR_ENTITIES,
    CONF_GUESTS_ENTITY,
    CONF_LOCK_ENTITIES,
    CONF_PRESENCE_ENTITIES,
    CONF_REQUEST_TIMEOUT,
    DOMAIN,
)
from custom_components.vigil.home_state import read_home_state
from custom_components.vigil.services import SERVICE_ANALYZE
from homeassistant.const import STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from .conftest import CAMERA_ENTITY, TRIGGER_ENTITY

OPTIONS: dict[str, Any] = {
    CONF_ALARM_ENTITY: "alarm_control_panel.house",
    CONF_PRESENCE_ENTITIES: [
        "person.alice",
        "device_tracker.bob_phone",
        "binary_sensor.hall_occupancy",
    ],
    CONF_DOOR_ENTITIES: ["binary_sensor.back_door", "binary_sensor.garage_door"],
    CONF_LOCK_ENTITIES: ["lock.front_door", "lock.back_door"],
    CONF_GUESTS_ENTITY: "input_boolean.guests",
}


async def set_home(hass: HomeAssistant, *, alarm: str, alice: str, guests: bool) -> None:
    """The home's entities: a real input_boolean for guests, states for the rest."""
    if "input_boolean" not in hass.config.components:
        assert await async_setup_component(
            hass, "input_boolean", {"input_boolean": {"guests": {"name": "Guests expected"}}}
        )
    await hass.services.async_call(
        "input_boolean", "turn_on" if guests else "turn_off", {"entity_id": "input_boolean.guests"}
    )
    hass.states.async_set("alarm_control_panel.house", alarm)
    hass.states.async_set("person.alice", alice, {"friendly_name": "Alice"})
    hass.states.async_set("device_tracker.bob_phone", "not_home", {"friendly_name": "Bob"})
    hass.states.async_set("binary_sensor.hall_occupancy", "off", {"device_class": "occupancy"})
    hass.states.async_set("binary_sensor.back_door", STATE_ON, {"friendly_name": "Back door"})
    hass.states.async_set("binary_sensor.garage_door", "off", {"friendly_name": "Garage"})
    hass.states.async_set("lock.front_door", "unlocked", {"friendly_name": "Front door"})
    hass.states.async_set("lock.back_door", "locked", {"friendly_name": "Back door lock"})
    await hass.async_block_till_done()


async def test_read_the_homes_entities(hass: HomeAssistant) -> None:
    await set_home(hass, alarm="armed_away", alice="not_home", guests=False)
    assert read_home_state(hass, OPTIONS) == {
        "alarm": "armed_away",
        "people_home": 0,
        "household_present": [],
        "doors_open": ["Back door"],
        "unlocked": ["Front door"],
        "guests_expected": False,
    }
    await set_home(hass, alarm="armed_custom_bypass", alice="home", guests=True)
    home = read_home_state(hass, OPTIONS)
    assert home is not None
    assert home["alarm"] == "armed_home"  # partly armed
    assert (home["people_home"], home["household_present"]) == (1, ["Alice"])
    assert home["guests_expected"] is True


async def test_unknown_states_are_left_out_never_guessed(hass: HomeAssistant) -> None:
    """An offline sensor says nothing: no "nobody home" from a tracker that is unavailable,
    no alarm state while it is arming (where it leads is not known)."""
    await set_home(hass, alarm="arming", alice="home", guests=False)
    for entity_id in ("person.alice", "device_tracker.bob_phone", "binary_sensor.hall_occupancy"):
        hass.states.async_set(entity_id, STATE_UNAVAILABLE)
    hass.states.async_set("lock.front_door", "unknown")
    hass.states.async_set("lock.back_door", "unknown")
    home = read_home_state(hass, OPTIONS | {CONF_GUESTS_ENTITY: "input_boolean.missing"})
    assert home == {"doors_open": ["Back door"]}
    assert read_home_state(hass, {CONF_REQUEST_TIMEOUT: 60}) is None  # nothing picked


@pytest.mark.usefixtures("init_integration")
async def test_the_camera_sends_the_home_state_with_each_analysis(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry, mock_vigil_client: MagicMock
) -> None:
    """States are read when the analysis runs: a change between two triggers is sent."""
    hass.config_entries.async_update_entry(mock_config_entry, options=OPTIONS)
    await hass.async_block_till_done()
    await set_home(hass, alarm="armed_away", alice="not_home", guests=False)

    hass.states.async_set(TRIGGER_ENTITY, STATE_ON, {"device_class": "motion"})
    await hass.async_block_till_done()
    first = mock_vigil_client.analyze.call_args.kwargs["home_state"]
    assert first["alarm"] == "armed_away"
    assert first["people_home"] == 0

    await set_home(hass, alarm="disarmed", alice="home", guests=True)
    await hass.services.async_call(  # the action (a trigger this soon would be debounced)
        DOMAIN, SERVICE_ANALYZE, {"entity_id": CAMERA_ENTITY}, blocking=True
    )
    assert mock_vigil_client.analyze.await_count == 2
    second = mock_vigil_client.analyze.call_args.kwargs["home_state"]
    assert second["alarm"] == "disarmed"
    assert second["household_present"] == ["Alice"]
    assert second["guests_expected"] is True
