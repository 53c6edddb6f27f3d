"""The notify blueprint, run by Home Assistant's automation engine on a real Vigil event."""

from __future__ import annotations

import shutil
from pathlib import Path
from unittest.mock import MagicMock

import pytest
from custom_components.vigil.api import AnalysisEvent
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_mock_service

from .conftest import TRIGGER_ENTITY, load_json

BLUEPRINTS = Path(__file__).parents[3] / "blueprints"


@pytest.fixture
async def automation(
    hass: HomeAssistant, tmp_path: Path, init_integration: MockConfigEntry
) -> None:
    """An automation made from the blueprint, watching the front door's risk event."""
    shutil.copytree(BLUEPRINTS, tmp_path / "blueprints")
    hass.config.config_dir = str(tmp_path)
    assert await async_setup_component(
        hass,
        "automation",
        {
            "automation": {
                "alias": "Vigil notify",
                "use_blueprint": {
                    "path": "vigil/notify_high_risk.yaml",
                    "input": {
                        "risk_events": ["event.front_door_risk_event"],
                        "notify_action": "notify.mobile_app_phone",
                    },
                },
            }
        },
    )
    await hass.async_block_till_done()


@pytest.mark.usefixtures("automation")
async def test_notifies_high_with_snapshot(
    hass: HomeAssistant, mock_vigil_client: MagicMock, mock_config_entry: MockConfigEntry
) -> None:
    """An event marked notify notifies with the snapshot; one not marked does not.

    The blueprint has no level threshold of its own: the add-on marked the event from the
    camera's notify level, so a medium event marked notify notifies too.
    """
    entry = mock_config_entry
    calls = async_mock_service(hass, "notify", "mobile_app_phone")
    hass.states.async_set(TRIGGER_ENTITY, STATE_ON, {"device_class": "motion"})
    await hass.async_block_till_done(wait_background_tasks=True)
    await hass.async_block_till_done()
    assert len(calls) == 1
    event = load_json("event.json")
    assert calls[0].data == {
        "title": f"Front door Risk event: {event['risk_level']} risk ({event['risk_score']})",
        "message": event["summary"],
        "data": {
            "image": "/api/image_proxy/image.front_door_last_snapshot",
            "entity_id": "camera.front_door",
            "tag": f"vigil-{event['id']}",
            "actions": [
                {
                    "action": f"VIGIL_NOT_A_THREAT|{entry.entry_id}|{event['id']}",
                    "title": "Not a threat",
                }
            ],
        },
    }

    hass.states.async_set(TRIGGER_ENTITY, STATE_OFF, {"device_class": "motion"})
    for event_id, notify in (("01NOTMARKED", False), ("01MARKED", True)):
        mock_vigil_client.analyze.return_value = AnalysisEvent.from_dict(
            load_json("event.json")
            | {"id": event_id, "risk_level": "medium", "risk_score": 40, "notify": notify}
        )
        await hass.services.async_call(
            "vigil", "analyze", {"entity_id": "camera.front_door"}, blocking=True
        )
        await hass.async_block_till_done()
    assert len(calls) == 2
    assert calls[1].data["title"] == "Front door Risk event: medium risk (40)"
    assert calls[1].data["data"]["tag"] == "vigil-01MARKED"


@pytest.mark.usefixtures("automation")
async def test_the_refinement_replaces_the_notification_in_place(
    hass: HomeAssistant, mock_vigil_client: MagicMock, mock_config_entry: MockConfigEntry
) -> None:
    """The LLM's revision of an event fires again: same tag, so the phone replaces it."""
    calls = async_mock_service(hass, "notify", "mobile_app_phone")
    await hass.services.async_call(
        "vigil", "analyze", {"entity_id": "camera.front_door"}, blocking=True
    )
    await hass.async_block_till_done()
    event = load_json("event.json")
    refined = event | {
        "revision": 2,
        "phase": "refined",
        "risk_level": "critical",
        "risk_score": 90,
        "summary": "Later",
    }
    coordinator = next(iter(mock_config_entry.runtime_data.cameras.values()))
    coordinator.async_publish(AnalysisEvent.from_dict(refined))
    await hass.async_block_till_done()
    assert len(calls) == 2
    first, second = (call.data for call in calls)
    assert first["data"]["tag"] == second["data"]["tag"] == f"vigil-{event['id']}"
    assert second["title"] == "Front door Risk event: critical risk (90), refined"
    assert second["message"] == "Later"


@pytest.mark.usefixtures("automation")
async def test_not_a_threat_button_gives_feedback(
    hass: HomeAssistant, mock_vigil_client: MagicMock, mock_config_entry: MockConfigEntry
) -> None:
    """The notification's "Not a threat" button marks that event a false alarm in the add-on;
    other apps' notification actions are left alone."""
    event = load_json("event.json")
    mock_vigil_client.feedback.return_value = AnalysisEvent.from_dict(
        event | {"feedback": {"verdict": "false_alarm", "note": None, "ts": 1.0}}
    )
    hass.bus.async_fire("mobile_app_notification_action", {"action": "OTHER_APP|x|y"})
    await hass.async_block_till_done()
    mock_vigil_client.feedback.assert_not_awaited()
    action = f"VIGIL_NOT_A_THREAT|{mock_config_entry.entry_id}|{event['id']}"
    hass.bus.async_fire("mobile_app_notification_action", {"action": action})
    await hass.async_block_till_done()
    mock_vigil_client.feedback.assert_awaited_once_with(event["id"], "false_alarm", None)
