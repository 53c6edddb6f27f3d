"""The home's state as evidence: what the user's alarm, presence, door, lock and guest
entities say, read when a camera is analysed and sent with the image as ``home_state``.

A stranger at the back door means something else when the alarm is armed away and nobody is
home; the add-on's rules turn these facts into named factors ("alarm armed away +25"). Only
what the entities actually say is sent: an unavailable or unknown entity leaves its key out,
so the add-on never reads "nobody home" from a presence sensor that is offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeassistant.const import STATE_HOME, STATE_ON, STATE_UNAVAILABLE, STATE_UNKNOWN
from homeassistant.core import HomeAssistant, State

from .const import (
    CONF_ALARM_ENTITY,
    CONF_DOOR_ENTITIES,
    CONF_GUESTS_ENTITY,
    CONF_LOCK_ENTITIES,
    CONF_PRESENCE_ENTITIES,
    HOME_STATE_OPTIONS,
)

ALARM_STATES: dict[str, str] = {
    "disarmed": "disarmed",
    "armed_home": "armed_home",
    "armed_away": "armed_away",
    "armed_night": "armed_night",
    "armed_vacation": "armed_vacation",
    "armed_custom_bypass": "armed_home",
    "triggered": "triggered",
}
"""Alarm panel states the add-on knows (its HomeState contract); a custom bypass is partly
armed, like armed_home. Transitional states (arming, pending, disarming) are not sent."""

UNLOCKED_STATES = frozenset({"unlocked", "open", "opening"})


def _known(hass: HomeAssistant, entity_id: str) -> State | None:
    state = hass.states.get(entity_id)
    if state is None or state.state in (STATE_UNAVAILABLE, STATE_UNKNOWN):
        return None
    return state


def _states(hass: HomeAssistant, entity_ids: Any) -> list[State]:
    return [s for e in entity_ids or () if (s := _known(hass, e)) is not None]


def _at_home(state: State) -> bool:
    """A person or device tracker at home, or an occupancy/presence binary sensor on."""
    return state.state in (STATE_HOME, STATE_ON)


def read_home_state(hass: HomeAssistant, options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``home_state`` object for the add-on, or None when no entity is configured."""
    out: dict[str, Any] = {}
    alarm = _known(hass, options[CONF_ALARM_ENTITY]) if options.get(CONF_ALARM_ENTITY) else None
    if alarm is not None and alarm.state in ALARM_STATES:
        out["alarm"] = ALARM_STATES[alarm.state]
    if presence := _states(hass, options.get(CONF_PRESENCE_ENTITIES)):
        home = [s for s in presence if _at_home(s)]
        out["people_home"] = len(home)
        out["household_present"] = [
            s.name for s in home if s.domain in ("person", "device_tracker")
        ]
    if doors := _states(hass, options.get(CONF_DOOR_ENTITIES)):
        out["doors_open"] = [s.name for s in doors if s.state == STATE_ON]
    if locks := _states(hass, options.get(CONF_LOCK_ENTITIES)):
        out["unlocked"] = [s.name for s in locks if s.state in UNLOCKED_STATES]
    guests = _known(hass, options[CONF_GUESTS_ENTITY]) if options.get(CONF_GUESTS_ENTITY) else None
    if guests is not None:
        out["guests_expected"] = guests.state == STATE_ON
    return out if any(options.get(key) for key in HOME_STATE_OPTIONS) else None
