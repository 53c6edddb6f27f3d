"""Tests of the trigger → analysis → entities path, the bus event and the event entity."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from unittest.mock import MagicMock, patch

import pytest
from custom_components.vigil.api import (
    AnalysisEvent,
    ImageUpload,
    VigilAuthenticationError,
    VigilConnectionError,
    VigilResponseError,
)
from custom_components.vigil.const import EVENT_RISK, HEALTH_INTERVAL
from freezegun.api import FrozenDateTimeFactory
from homeassistant.config_entries import SOURCE_REAUTH
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from .conftest import (
    CAMERA_ENTITY,
    EVENT_ENRICHMENTS,
    TRIGGER_ENTITY,
    FakeCamera,
    load_bytes,
    load_json,
)

pytestmark = pytest.mark.usefixtures("init_integration")

EVENT_ENTITY = "event.front_door_risk_event"
EVENT = load_json("event.json")
"""The add-on's answer to bus.jpg at night (recorded); every analysis below returns it."""


ENRICHED = EVENT | {
    "id": "0123456789ab0000000000ff",
    "enrichments": {
        "results": {
            # Each family's own fields (docs/zoo-models); two models may answer one field.
            "threat_detector": {
                "threats": [
                    {"class_name": "scissors", "confidence": 0.41, "source": "detector"},
                    {"class_name": "knife", "confidence": 0.87, "source": "imagenet"},
                ],
                "max_confidence": 0.87,
            },
            "threat_yolo": {
                "threats": [{"class_name": "gun", "confidence": 0.93, "source": "yolo"}]
            },
            "pose": {
                "persons": [
                    {"posture": "standing"},
                    {"posture": "crouching"},
                    {"posture": "standing"},
                    {"posture": "unknown"},
                ],
                "postures": ["standing", "crouching", "standing", "unknown"],
            },
            "pet_classifier": {
                "pets": [
                    {
                        "species": "fox",
                        "label": "red fox",
                        "confidence": 0.30,
                        "is_household_pet": False,
                    },
                    {
                        "species": "cat",
                        "label": "tabby",
                        "confidence": 0.91,
                        "is_household_pet": True,
                    },
                ]
            },
            "vehicle_classifier": {
                "vehicles": [{"vehicle_type": "pickup", "label": "pickup", "confidence": 0.8}]
            },
            "plate_reader": {"plates": [{"text": "AB 123 CD", "confidence": 0.77}]},
        },
        "skipped": {
            "demographics": {"reason": "zoo_busy", "message": "deadline: no memory in 5 s"},
            "appearance": {"reason": "not_installed", "message": "missing file"},
        },
    },
}
"""The recorded event with every enrichment the integration flattens (threat, pose, pet,
vehicle, plate: the fields of each model family) and two skipped models."""


def motion(hass: HomeAssistant, state: str) -> None:
    """Set the trigger sensor."""
    hass.states.async_set(TRIGGER_ENTITY, state, {"device_class": "motion"})


async def test_trigger_runs_analysis(hass: HomeAssistant, mock_vigil_client: MagicMock) -> None:
    """Motion on: the camera's image is analysed and every entity shows the result."""
    bus_events = async_capture_events(hass, EVENT_RISK)
    assert hass.states.get(EVENT_ENTITY).state == "unknown"

    motion(hass, STATE_ON)
    await hass.async_block_till_done()

    mock_vigil_client.analyze.assert_awaited_once()
    (image,), kwargs = mock_vigil_client.analyze.call_args
    assert image == ImageUpload(content=load_bytes("bus.jpg"), content_type="image/jpeg")
    assert kwargs["camera"] == "front_door"
    assert kwargs["llm"] is True
    assert kwargs["timestamp"].tzinfo is not None
    assert kwargs["notify_level"] == "high"  # the camera's: the add-on decides `notify`
    assert kwargs["home_state"] is None  # no home-state entity picked in the options

    assert hass.states.get("sensor.front_door_risk_score").state == str(EVENT["risk_score"])
    assert hass.states.get("sensor.front_door_risk_level").state == EVENT["risk_level"]
    assert hass.states.get("sensor.front_door_persons").state == "3"
    assert hass.states.get("sensor.front_door_vehicles").state == "1"
    assert hass.states.get("sensor.front_door_animals").state == "0"
    assert hass.states.get("binary_sensor.front_door_threat").state == STATE_ON
    assert hass.states.get("sensor.front_door_last_summary").state == EVENT["summary"]
    assert hass.states.get("sensor.front_door_last_event").state == "2026-11-23T04:30:00+00:00"
    assert hass.states.get("image.front_door_last_snapshot").state == "2026-11-23T04:30:00+00:00"

    event_state = hass.states.get(EVENT_ENTITY)
    assert event_state.attributes["event_type"] == EVENT["risk_level"]
    assert event_state.attributes["score"] == EVENT["risk_score"]
    assert event_state.attributes["event_id"] == EVENT["id"]
    assert event_state.attributes["notify"] is True
    assert event_state.attributes["camera_entity"] == CAMERA_ENTITY
    assert event_state.attributes["snapshot_entity"] == "image.front_door_last_snapshot"
    # bus.jpg: standing persons and a bus; no threat, animal or plate, no model skipped.
    for key, value in EVENT_ENRICHMENTS.items():
        assert event_state.attributes[key] == value
    for key in ("threat", "threat_confidence", "pet", "pet_household", "plate"):
        assert key not in event_state.attributes
    assert "enrichments_skipped" not in event_state.attributes
    assert [f["name"] for f in event_state.attributes["factors"]] == [
        "unknown_person",
        "small_hours",
        "night",
        "person_present",
        "vehicle",
    ]

    assert len(bus_events) == 1
    assert bus_events[0].data == {
        "camera": CAMERA_ENTITY,
        "level": EVENT["risk_level"],
        "score": EVENT["risk_score"],
        "summary": EVENT["summary"],
        "event_id": EVENT["id"],
        "notify": True,
        "factors": EVENT["factors"],
        "phase": "initial",
        "revision": 1,
        **EVENT_ENRICHMENTS,
    }


async def test_only_rising_edges_trigger(hass: HomeAssistant, mock_vigil_client: MagicMock) -> None:
    """Attribute changes while on, turning off, and the sensor vanishing do not trigger."""
    with patch(
        "custom_components.vigil.coordinator.time.monotonic", side_effect=range(0, 10**6, 100)
    ):
        motion(hass, STATE_ON)
        await hass.async_block_till_done()
        hass.states.async_set(TRIGGER_ENTITY, STATE_ON, {"device_class": "motion", "x": 1})
        motion(hass, STATE_OFF)
        hass.states.async_remove(TRIGGER_ENTITY)
        await hass.async_block_till_done()
        assert mock_vigil_client.analyze.await_count == 1
        # Back from "removed" (no old state) straight to on: a rising edge.
        motion(hass, STATE_ON)
        await hass.async_block_till_done()
        assert mock_vigil_client.analyze.await_count == 2


async def test_debounce(hass: HomeAssistant, mock_vigil_client: MagicMock) -> None:
    """Triggers within the camera's minimum interval (10 s) are ignored."""
    clock = [1000.0]
    with patch("custom_components.vigil.coordinator.time.monotonic", side_effect=lambda: clock[0]):
        motion(hass, STATE_ON)
        await hass.async_block_till_done()
        clock[0] += 5
        motion(hass, STATE_OFF)
        motion(hass, STATE_ON)
        await hass.async_block_till_done()
        assert mock_vigil_client.analyze.await_count == 1
        clock[0] += 6
        motion(hass, STATE_OFF)
        motion(hass, STATE_ON)
        await hass.async_block_till_done()
        assert mock_vigil_client.analyze.await_count == 2


async def test_not_twice_at_once(hass: HomeAssistant, mock_vigil_client: MagicMock) -> None:
    """A camera being analysed is not analysed again; the action joins the running one."""
    release = asyncio.Event()
    result = AnalysisEvent.from_dict(load_json("event.json"))

    async def slow_analyze(*args: object, **kwargs: object) -> AnalysisEvent:
        await release.wait()
        return result

    mock_vigil_client.analyze.side_effect = slow_analyze
    with patch(
        "custom_components.vigil.coordinator.time.monotonic", side_effect=range(0, 10**6, 100)
    ):
        motion(hass, STATE_ON)
        await hass.async_block_till_done(wait_background_tasks=False)
        motion(hass, STATE_OFF)
        motion(hass, STATE_ON)
        await hass.async_block_till_done(wait_background_tasks=False)
        call = hass.async_create_task(
            hass.services.async_call(
                "vigil",
                "analyze",
                {"entity_id": CAMERA_ENTITY},
                blocking=True,
                return_response=True,
            )
        )
        await asyncio.sleep(0)
        release.set()
        response = await call
        await hass.async_block_till_done()
    assert mock_vigil_client.analyze.await_count == 1
    assert response["events"][CAMERA_ENTITY]["id"] == result.id


async def test_trigger_ignored_while_addon_down(
    hass: HomeAssistant, mock_vigil_client: MagicMock, freezer: FrozenDateTimeFactory
) -> None:
    """No analysis is attempted while the add-on is unreachable."""
    mock_vigil_client.health.side_effect = VigilConnectionError("down")
    freezer.tick(HEALTH_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    motion(hass, STATE_ON)
    await hass.async_block_till_done()
    mock_vigil_client.analyze.assert_not_awaited()
    assert hass.states.get("sensor.front_door_risk_score").state == STATE_UNAVAILABLE


async def test_failures_logged_once(
    hass: HomeAssistant, mock_vigil_client: MagicMock, caplog: pytest.LogCaptureFixture
) -> None:
    """Failing trigger analyses warn once, then say when they work again."""
    mock_vigil_client.analyze.side_effect = VigilResponseError("queue full", code="queue_full")
    with patch(
        "custom_components.vigil.coordinator.time.monotonic", side_effect=range(0, 10**6, 100)
    ):
        for _ in range(3):
            motion(hass, STATE_ON)
            await hass.async_block_till_done()
            motion(hass, STATE_OFF)
        assert caplog.text.count("analysis failed") == 1
        assert "queue full" in caplog.text
        mock_vigil_client.analyze.side_effect = None
        motion(hass, STATE_ON)
        await hass.async_block_till_done()
    assert "analyses work again" in caplog.text
    assert hass.states.get("sensor.front_door_risk_score").state == str(EVENT["risk_score"])


async def test_connection_lost_during_analysis(
    hass: HomeAssistant, mock_vigil_client: MagicMock
) -> None:
    """A connection error while analysing re-polls the add-on at once."""
    mock_vigil_client.analyze.side_effect = VigilConnectionError("reset")
    mock_vigil_client.health.side_effect = VigilConnectionError("down")
    motion(hass, STATE_ON)
    await hass.async_block_till_done()
    assert hass.states.get("binary_sensor.vigil_connectivity").state == STATE_OFF


async def test_token_refused_during_analysis(
    hass: HomeAssistant, mock_vigil_client: MagicMock, init_integration: MockConfigEntry
) -> None:
    """A 401 from /v1/analyze starts the re-authentication flow."""
    mock_vigil_client.analyze.side_effect = VigilAuthenticationError("401")
    motion(hass, STATE_ON)
    await hass.async_block_till_done()
    flows = hass.config_entries.flow.async_progress()
    assert [f["context"]["source"] for f in flows] == [SOURCE_REAUTH]


async def test_camera_without_image(
    hass: HomeAssistant,
    mock_vigil_client: MagicMock,
    fake_camera: FakeCamera,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A camera that gives no image: nothing is sent, a warning says why."""
    fake_camera.fail = True
    motion(hass, STATE_ON)
    await hass.async_block_till_done()
    mock_vigil_client.analyze.assert_not_awaited()
    assert "camera.front_door: analysis failed" in caplog.text


async def test_snapshot_image(
    hass: HomeAssistant,
    mock_vigil_client: MagicMock,
    hass_client: ClientSessionGenerator,
) -> None:
    """The image entity serves the add-on's annotated snapshot, fetched once per event."""
    client = await hass_client()
    resp = await client.get("/api/image_proxy/image.front_door_last_snapshot")
    assert resp.status == HTTPStatus.OK
    assert await resp.read() == b"\xff\xd8annotated-snapshot\xff\xd9"
    resp = await client.get("/api/image_proxy/image.front_door_last_snapshot")
    assert resp.status == HTTPStatus.OK
    stored = load_json("events.json")["events"][0]
    mock_vigil_client.snapshot.assert_awaited_once_with(stored["id"])

    mock_vigil_client.snapshot.side_effect = VigilConnectionError("down")
    motion(hass, STATE_ON)
    await hass.async_block_till_done()
    resp = await client.get("/api/image_proxy/image.front_door_last_snapshot")
    assert resp.status == HTTPStatus.INTERNAL_SERVER_ERROR


async def test_unload_during_analysis(
    hass: HomeAssistant, mock_vigil_client: MagicMock, init_integration: MockConfigEntry
) -> None:
    """Unloading the entry cancels a running analysis quietly."""
    started = asyncio.Event()

    async def hang(*args: object, **kwargs: object) -> AnalysisEvent:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError  # pragma: no cover

    mock_vigil_client.analyze.side_effect = hang
    (camera,) = init_integration.runtime_data.cameras.values()
    motion(hass, STATE_ON)
    await started.wait()
    assert camera.busy
    assert await hass.config_entries.async_unload(init_integration.entry_id)
    await hass.async_block_till_done()
    assert not camera.busy


async def test_unknown_risk_level(hass: HomeAssistant, mock_vigil_client: MagicMock) -> None:
    """A level outside the four bands: no level, no threat, no event-entity event."""
    mock_vigil_client.analyze.return_value = AnalysisEvent.from_dict(
        EVENT | {"risk_level": "extreme", "notify": False}
    )
    motion(hass, STATE_ON)
    await hass.async_block_till_done()
    assert hass.states.get("sensor.front_door_risk_score").state == str(EVENT["risk_score"])
    assert hass.states.get("sensor.front_door_risk_level").state == "unknown"
    assert hass.states.get("binary_sensor.front_door_threat").state == STATE_OFF
    assert hass.states.get(EVENT_ENTITY).state == "unknown"


@pytest.mark.parametrize(("level", "notify"), [("medium", True), ("critical", False)])
async def test_notify_is_the_addons_decision(
    hass: HomeAssistant, mock_vigil_client: MagicMock, level: str, notify: bool
) -> None:
    """The event's `notify` is shown as the add-on decided it, whatever the level.

    The camera's notify level (high here) went to the add-on with the request; the
    integration does not compare levels itself, so it can never disagree with the add-on.
    """
    bus_events = async_capture_events(hass, EVENT_RISK)
    mock_vigil_client.analyze.return_value = AnalysisEvent.from_dict(
        load_json("event.json") | {"risk_level": level, "notify": notify}
    )
    motion(hass, STATE_ON)
    await hass.async_block_till_done()
    assert bus_events[0].data["notify"] is notify
    assert hass.states.get(EVENT_ENTITY).attributes["notify"] is notify
    threat = hass.states.get("binary_sensor.front_door_threat").state
    assert threat == (STATE_ON if notify else STATE_OFF)
    response = await hass.services.async_call(
        "vigil", "analyze", {"entity_id": CAMERA_ENTITY}, blocking=True, return_response=True
    )
    assert response is not None
    assert response["events"][CAMERA_ENTITY]["notify"] is notify  # type: ignore[index]


async def test_enrichments_flattened(hass: HomeAssistant, mock_vigil_client: MagicMock) -> None:
    """The event entity and the bus event carry the enrichments flat, for automations.

    The most confident threat wins, whichever model found it; postures are the persons'
    known ones, once each; the most confident animal and whether it is a household pet;
    the vehicle type and the plate text; and why triggered models gave nothing. An event
    without enrichments then shows none of these keys.
    """
    bus_events = async_capture_events(hass, EVENT_RISK)
    mock_vigil_client.analyze.return_value = AnalysisEvent.from_dict(ENRICHED)
    motion(hass, STATE_ON)
    await hass.async_block_till_done()

    flat = {
        "threat": "gun",
        "threat_confidence": 0.93,
        "postures": ["crouching", "standing"],
        "pet": "cat",
        "pet_household": True,
        "vehicle_type": "pickup",
        "plate": "AB 123 CD",
        "enrichments_skipped": {"appearance": "not_installed", "demographics": "zoo_busy"},
    }
    attributes = hass.states.get(EVENT_ENTITY).attributes
    assert {key: attributes.get(key) for key in flat} == flat
    assert {key: bus_events[0].data.get(key) for key in flat} == flat

    plain = EVENT | {
        "id": "0123456789ab0000000000fe",
        "enrichments": {"results": {}, "skipped": {}},
    }
    mock_vigil_client.analyze.return_value = AnalysisEvent.from_dict(plain)
    await hass.services.async_call("vigil", "analyze", {"entity_id": CAMERA_ENTITY}, blocking=True)
    attributes = hass.states.get(EVENT_ENTITY).attributes
    assert attributes["event_id"] == plain["id"]
    assert not set(flat) & set(attributes)
    assert not set(flat) & set(bus_events[-1].data)


async def test_recorded_cat_is_a_household_pet(
    hass: HomeAssistant, mock_vigil_client: MagicMock
) -> None:
    """The add-on's answer to the cat photo (recorded): the event says a household cat, and
    nothing else the zoo could say."""
    cat = load_json("events.json")["events"][0]
    bus_events = async_capture_events(hass, EVENT_RISK)
    mock_vigil_client.analyze.return_value = AnalysisEvent.from_dict(
        cat | {"id": "0123456789ab0000000000fd"}
    )
    await hass.services.async_call("vigil", "analyze", {"entity_id": CAMERA_ENTITY}, blocking=True)
    attributes = hass.states.get(EVENT_ENTITY).attributes
    assert (attributes["pet"], attributes["pet_household"]) == ("cat", True)
    for key in ("threat", "postures", "vehicle_type", "plate", "enrichments_skipped"):
        assert key not in attributes
    assert (bus_events[0].data["pet"], bus_events[0].data["pet_household"]) == ("cat", True)
