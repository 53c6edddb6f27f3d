"""Tests of the Vigil config flow, options flow and camera subentry flow."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest
from custom_components.vigil.api import (
    Health,
    VigilAuthenticationError,
    VigilConnectionError,
)
from custom_components.vigil.const import (
    CONF_ALARM_ENTITY,
    CONF_CAMERA_ENTITY,
    CONF_DOOR_ENTITIES,
    CONF_GUESTS_ENTITY,
    CONF_LLM,
    CONF_LOCK_ENTITIES,
    CONF_MIN_INTERVAL,
    CONF_NOTIFY_LEVEL,
    CONF_PRESENCE_ENTITIES,
    CONF_REQUEST_TIMEOUT,
    CONF_TRIGGER_ENTITIES,
    DOMAIN,
    SUBENTRY_CAMERA,
)
from homeassistant.config_entries import SOURCE_RECONFIGURE, SOURCE_USER
from homeassistant.const import CONF_API_TOKEN, CONF_HOST, CONF_PORT, CONF_SSL
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry

from .conftest import CAMERA_ENTITY, CAMERA_SUBENTRY_ID, INSTANCE_ID, TRIGGER_ENTITY, load_json

USER_INPUT = {
    CONF_HOST: " 192.168.1.20 ",
    CONF_PORT: 8095.0,
    CONF_API_TOKEN: "tok3n",
    CONF_SSL: False,
}
ENTRY_DATA = {
    CONF_HOST: "192.168.1.20",
    CONF_PORT: 8095,
    CONF_API_TOKEN: "tok3n",
    CONF_SSL: False,
}


@pytest.mark.usefixtures("mock_setup_entry")
async def test_user_flow(hass: HomeAssistant, mock_vigil_client: MagicMock) -> None:
    """The happy path: the add-on answers, the token works, the entry is made."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {}

    result = await hass.config_entries.flow.async_configure(result["flow_id"], USER_INPUT)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Vigil (192.168.1.20)"
    assert result["data"] == ENTRY_DATA
    assert result["result"].unique_id == INSTANCE_ID
    mock_vigil_client.health.assert_awaited_once()
    mock_vigil_client.verify_auth.assert_awaited_once()


@pytest.mark.usefixtures("mock_setup_entry", "mock_vigil_client")
async def test_user_flow_without_token(hass: HomeAssistant) -> None:
    """An empty token is not stored (an add-on without a token)."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: "vigil.local", CONF_PORT: 8095, CONF_SSL: True}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {CONF_HOST: "vigil.local", CONF_PORT: 8095, CONF_SSL: True}


@pytest.mark.usefixtures("mock_setup_entry")
@pytest.mark.parametrize(
    ("method", "side_effect", "errors"),
    [
        ("health", VigilConnectionError("down"), {"base": "cannot_connect"}),
        ("verify_auth", VigilAuthenticationError("nope"), {CONF_API_TOKEN: "invalid_auth"}),
        ("health", RuntimeError("boom"), {"base": "unknown"}),
    ],
)
async def test_user_flow_errors(
    hass: HomeAssistant,
    mock_vigil_client: MagicMock,
    method: str,
    side_effect: Exception,
    errors: dict[str, str],
) -> None:
    """Each failure shows its error, and the flow recovers once it is gone."""
    getattr(mock_vigil_client, method).side_effect = side_effect
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], USER_INPUT)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors

    getattr(mock_vigil_client, method).side_effect = None
    result = await hass.config_entries.flow.async_configure(result["flow_id"], USER_INPUT)
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.usefixtures("mock_setup_entry", "mock_vigil_client")
async def test_user_flow_already_configured(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry
) -> None:
    """The same add-on (instance id) is not added twice; its address is updated."""
    mock_config_entry.add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], USER_INPUT)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert mock_config_entry.data[CONF_HOST] == "192.168.1.20"


@pytest.mark.usefixtures("mock_setup_entry")
async def test_reauth(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry, mock_vigil_client: MagicMock
) -> None:
    """A new token is checked and stored."""
    mock_config_entry.add_to_hass(hass)
    result = await mock_config_entry.start_reauth_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reauth_confirm"
    assert result["description_placeholders"]["host"] == "127.0.0.1"

    mock_vigil_client.verify_auth.side_effect = VigilAuthenticationError("nope")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_TOKEN: "bad"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}

    mock_vigil_client.verify_auth.side_effect = None
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_TOKEN: "new"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert mock_config_entry.data[CONF_API_TOKEN] == "new"
    assert mock_config_entry.data[CONF_HOST] == "127.0.0.1"


@pytest.mark.usefixtures("mock_setup_entry")
async def test_reauth_other_instance(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry, mock_vigil_client: MagicMock
) -> None:
    """A token for a different add-on at the same address is refused."""
    mock_config_entry.add_to_hass(hass)
    mock_vigil_client.health.return_value = Health.from_dict(
        load_json("health.json") | {"instance_id": "another"}
    )
    result = await mock_config_entry.start_reauth_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_TOKEN: "x"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "wrong_instance"


@pytest.mark.usefixtures("mock_setup_entry")
async def test_reconfigure(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry, mock_vigil_client: MagicMock
) -> None:
    """The address can change; the form starts from the current values."""
    mock_config_entry.add_to_hass(hass)
    result = await mock_config_entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"

    mock_vigil_client.health.side_effect = VigilConnectionError("down")
    result = await hass.config_entries.flow.async_configure(result["flow_id"], USER_INPUT)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}

    mock_vigil_client.health.side_effect = None
    result = await hass.config_entries.flow.async_configure(result["flow_id"], USER_INPUT)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert dict(mock_config_entry.data) == ENTRY_DATA


@pytest.mark.usefixtures("mock_setup_entry")
async def test_reconfigure_other_instance(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry, mock_vigil_client: MagicMock
) -> None:
    """Reconfiguring onto another add-on instance is refused."""
    mock_config_entry.add_to_hass(hass)
    mock_vigil_client.health.return_value = Health.from_dict(
        load_json("health.json") | {"instance_id": "another"}
    )
    result = await mock_config_entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], USER_INPUT)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "wrong_instance"
    assert mock_config_entry.data[CONF_HOST] == "127.0.0.1"


@pytest.mark.usefixtures("mock_setup_entry")
async def test_options_flow(hass: HomeAssistant, mock_config_entry: MockConfigEntry) -> None:
    """The options hold the server-wide analysis timeout."""
    mock_config_entry.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(mock_config_entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_REQUEST_TIMEOUT: 90.0}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert mock_config_entry.options == {CONF_REQUEST_TIMEOUT: 90}


@pytest.mark.usefixtures("mock_setup_entry")
async def test_options_flow_home_state_entities(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry
) -> None:
    """The home-state entities are picked in the options; an emptied picker is dropped."""
    mock_config_entry.add_to_hass(hass)
    home = {
        CONF_ALARM_ENTITY: "alarm_control_panel.house",
        CONF_PRESENCE_ENTITIES: ["person.alice", "device_tracker.bob_phone"],
        CONF_DOOR_ENTITIES: ["binary_sensor.back_door"],
        CONF_LOCK_ENTITIES: ["lock.front_door"],
        CONF_GUESTS_ENTITY: "input_boolean.guests",
    }
    result = await hass.config_entries.options.async_init(mock_config_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_REQUEST_TIMEOUT: 60, **home}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert mock_config_entry.options == {CONF_REQUEST_TIMEOUT: 60, **home}
    # Shown again, the form suggests what is set; clearing the locks drops the key.
    result = await hass.config_entries.options.async_init(mock_config_entry.entry_id)
    schema = result["data_schema"].schema
    suggested = {str(k): (k.description or {}).get("suggested_value") for k in schema}
    assert suggested[CONF_ALARM_ENTITY] == "alarm_control_panel.house"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_REQUEST_TIMEOUT: 60, **home, CONF_LOCK_ENTITIES: []}
    )
    assert CONF_LOCK_ENTITIES not in mock_config_entry.options
    assert mock_config_entry.options[CONF_GUESTS_ENTITY] == "input_boolean.guests"


CAMERA_INPUT = {
    CONF_CAMERA_ENTITY: "camera.back_yard",
    CONF_TRIGGER_ENTITIES: ["binary_sensor.back_motion"],
    CONF_MIN_INTERVAL: 30.0,
    CONF_LLM: False,
    CONF_NOTIFY_LEVEL: "medium",
}


@pytest.mark.usefixtures("mock_setup_entry")
async def test_add_camera(hass: HomeAssistant, mock_config_entry: MockConfigEntry) -> None:
    """A camera is added as a subentry, titled with the camera's name."""
    mock_config_entry.add_to_hass(hass)
    hass.states.async_set("camera.back_yard", "idle", {"friendly_name": "Back yard"})

    result = await hass.config_entries.subentries.async_init(
        (mock_config_entry.entry_id, SUBENTRY_CAMERA), context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"

    result = await hass.config_entries.subentries.async_configure(result["flow_id"], CAMERA_INPUT)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Back yard"
    assert result["unique_id"] == "camera.back_yard"
    assert result["data"] == CAMERA_INPUT | {CONF_MIN_INTERVAL: 30}
    assert len(mock_config_entry.subentries) == 2


@pytest.mark.usefixtures("mock_setup_entry")
@pytest.mark.parametrize(
    ("camera", "error"),
    [
        (CAMERA_ENTITY, "camera_already_configured"),
        ("camera.nowhere", "camera_not_found"),
    ],
)
async def test_add_camera_errors(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry, camera: str, error: str
) -> None:
    """A camera already set up, or one that does not exist, is refused."""
    mock_config_entry.add_to_hass(hass)
    hass.states.async_set(CAMERA_ENTITY, "idle", {"friendly_name": "Front door"})
    hass.states.async_set("camera.back_yard", "idle", {"friendly_name": "Back yard"})
    result = await hass.config_entries.subentries.async_init(
        (mock_config_entry.entry_id, SUBENTRY_CAMERA), context={"source": SOURCE_USER}
    )
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], CAMERA_INPUT | {CONF_CAMERA_ENTITY: camera}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_CAMERA_ENTITY: error}

    result = await hass.config_entries.subentries.async_configure(result["flow_id"], CAMERA_INPUT)
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.usefixtures("mock_setup_entry")
async def test_reconfigure_camera(hass: HomeAssistant, mock_config_entry: MockConfigEntry) -> None:
    """A camera's settings can be changed; the form starts from its current ones."""
    mock_config_entry.add_to_hass(hass)
    hass.states.async_set(CAMERA_ENTITY, "idle", {"friendly_name": "Front door"})
    result = await hass.config_entries.subentries.async_init(
        (mock_config_entry.entry_id, SUBENTRY_CAMERA),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": CAMERA_SUBENTRY_ID},
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"

    new = {
        CONF_CAMERA_ENTITY: CAMERA_ENTITY,
        CONF_TRIGGER_ENTITIES: [TRIGGER_ENTITY, "binary_sensor.porch_occupancy"],
        CONF_MIN_INTERVAL: 5,
        CONF_LLM: True,
        CONF_NOTIFY_LEVEL: "critical",
    }
    result = await hass.config_entries.subentries.async_configure(result["flow_id"], new)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert dict(mock_config_entry.subentries[CAMERA_SUBENTRY_ID].data) == new


@pytest.mark.usefixtures("mock_setup_entry")
async def test_reconfigure_camera_onto_taken_camera(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry
) -> None:
    """Pointing a camera subentry at a camera another subentry has is refused."""
    mock_config_entry.add_to_hass(hass)
    hass.states.async_set("camera.back_yard", "idle", {"friendly_name": "Back yard"})
    result = await hass.config_entries.subentries.async_init(
        (mock_config_entry.entry_id, SUBENTRY_CAMERA), context={"source": SOURCE_USER}
    )
    await hass.config_entries.subentries.async_configure(result["flow_id"], CAMERA_INPUT)

    result = await hass.config_entries.subentries.async_init(
        (mock_config_entry.entry_id, SUBENTRY_CAMERA),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": CAMERA_SUBENTRY_ID},
    )
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], CAMERA_INPUT | {CONF_CAMERA_ENTITY: "camera.back_yard"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_CAMERA_ENTITY: "camera_already_configured"}
