"""Tests of the Vigil actions."""

from __future__ import annotations

import itertools
from pathlib import Path
from unittest.mock import MagicMock

import probatio
import pytest
from custom_components.vigil.api import (
    AnalysisEvent,
    ImageUpload,
    Model,
    VigilAuthenticationError,
    VigilConnectionError,
    VigilModelNotInstalledError,
    VigilNotFoundError,
    VigilResponseError,
)
from custom_components.vigil.const import DOMAIN
from custom_components.vigil.services import (
    SERVICE_ANALYZE,
    SERVICE_ENROLL_PERSON,
    SERVICE_FEEDBACK,
    SERVICE_LOAD_MODEL,
    SERVICE_UNLOAD_MODEL,
)
from homeassistant.config_entries import SOURCE_REAUTH
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from .conftest import CAMERA_ENTITY, EVENT_ENRICHMENTS, FakeCamera, load_bytes, load_json

pytestmark = pytest.mark.usefixtures("init_integration")


async def test_analyze_returns_events(hass: HomeAssistant, mock_vigil_client: MagicMock) -> None:
    """vigil.analyze runs now and returns each camera's event."""
    response = await hass.services.async_call(
        DOMAIN, SERVICE_ANALYZE, {"entity_id": CAMERA_ENTITY}, blocking=True, return_response=True
    )
    event = load_json("event.json")
    assert response == {
        "events": {
            CAMERA_ENTITY: {
                "id": event["id"],
                "camera": CAMERA_ENTITY,
                "timestamp": "2026-11-23T04:30:00+00:00",
                "risk_score": event["risk_score"],
                "risk_level": event["risk_level"],
                "summary": event["summary"],
                "reasoning": event["reasoning"],
                "factors": [f | {"points": float(f["points"])} for f in event["factors"]],
                "counts": {"person": 3, "vehicle": 1, "animal": 0},
                "notify": True,
                "llm_status": "skipped",
                **EVENT_ENRICHMENTS,
            }
        }
    }
    assert hass.states.get("sensor.front_door_risk_score").state == str(event["risk_score"])


async def test_analyze_by_device_without_response(
    hass: HomeAssistant, mock_vigil_client: MagicMock, device_registry: dr.DeviceRegistry
) -> None:
    """Targets resolve through devices too; without a response nothing is returned."""
    other = MockConfigEntry(domain="test")
    other.add_to_hass(hass)
    device = device_registry.async_get_or_create(
        config_entry_id=other.entry_id, identifiers={("test", "cam")}
    )
    er.async_get(hass).async_update_entity(CAMERA_ENTITY, device_id=device.id)
    result = await hass.services.async_call(
        DOMAIN, SERVICE_ANALYZE, {"device_id": device.id}, blocking=True
    )
    assert result is None
    mock_vigil_client.analyze.assert_awaited_once()


@pytest.mark.parametrize(
    ("target", "key"),
    [
        ({"entity_id": "camera.unknown"}, "camera_not_configured"),
        ({"entity_id": "binary_sensor.front_motion"}, "no_cameras"),
    ],
)
async def test_analyze_bad_target(
    hass: HomeAssistant, mock_vigil_client: MagicMock, target: dict[str, str], key: str
) -> None:
    """Targets that are not Vigil cameras are refused with a translated message."""
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(DOMAIN, SERVICE_ANALYZE, target, blocking=True)
    assert err.value.translation_key == key
    mock_vigil_client.analyze.assert_not_awaited()


@pytest.mark.parametrize(
    ("side_effect", "key"),
    [
        (VigilConnectionError("down"), "cannot_connect"),
        (VigilResponseError("image too large", code="image_too_large"), "analysis_failed"),
        (VigilAuthenticationError("401"), "invalid_auth"),
    ],
)
async def test_analyze_errors(
    hass: HomeAssistant, mock_vigil_client: MagicMock, side_effect: Exception, key: str
) -> None:
    """Add-on errors become HomeAssistantErrors with translation keys."""
    mock_vigil_client.analyze.side_effect = side_effect
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            DOMAIN, SERVICE_ANALYZE, {"entity_id": CAMERA_ENTITY}, blocking=True
        )
    assert err.value.translation_key == key


async def test_enroll_person(
    hass: HomeAssistant, mock_vigil_client: MagicMock, tmp_path: Path
) -> None:
    """A person is enrolled from a file and a camera image."""
    photo = tmp_path / "alex.png"
    photo.write_bytes(b"\x89PNG fake")
    hass.config.allowlist_external_dirs = {str(tmp_path)}
    response = await hass.services.async_call(
        DOMAIN,
        SERVICE_ENROLL_PERSON,
        {"name": " Alex ", "files": [str(photo)], "cameras": [CAMERA_ENTITY]},
        blocking=True,
        return_response=True,
    )
    assert response == {"id": load_json("person.json")["id"], "name": "Alex", "embeddings": 2}
    mock_vigil_client.enroll_person.assert_awaited_once_with(
        "Alex",
        [
            ImageUpload(content=b"\x89PNG fake", content_type="image/png"),
            ImageUpload(content=load_bytes("bus.jpg"), content_type="image/jpeg"),
        ],
    )


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"name": "Alex"}, "no_images"),
        ({"name": "Alex", "files": ["/etc/passwd"]}, "path_not_allowed"),
        ({"name": "Alex", "files": ["{tmp}/missing.jpg"]}, "file_not_found"),
    ],
)
async def test_enroll_person_bad_input(
    hass: HomeAssistant, mock_vigil_client: MagicMock, tmp_path: Path, data: dict, key: str
) -> None:
    """Bad enrolment input is refused with a translated message."""
    hass.config.allowlist_external_dirs = {str(tmp_path)}
    if "files" in data:
        data = data | {"files": [f.format(tmp=tmp_path) for f in data["files"]]}
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(DOMAIN, SERVICE_ENROLL_PERSON, data, blocking=True)
    assert err.value.translation_key == key
    mock_vigil_client.enroll_person.assert_not_awaited()


async def test_enroll_person_camera_fails(
    hass: HomeAssistant, mock_vigil_client: MagicMock, fake_camera: FakeCamera
) -> None:
    """A camera without an image: a translated error, nothing sent."""
    fake_camera.fail = True
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            DOMAIN,
            SERVICE_ENROLL_PERSON,
            {"name": "Alex", "cameras": [CAMERA_ENTITY]},
            blocking=True,
        )
    assert err.value.translation_key == "camera_image_failed"


async def test_enroll_person_addon_without_people(
    hass: HomeAssistant, mock_vigil_client: MagicMock
) -> None:
    """An add-on without /v1/people: a translated add-on error."""
    mock_vigil_client.enroll_person.side_effect = VigilNotFoundError("not found", status=404)
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            DOMAIN,
            SERVICE_ENROLL_PERSON,
            {"name": "Alex", "cameras": [CAMERA_ENTITY]},
            blocking=True,
        )
    assert err.value.translation_key == "addon_error"


async def test_load_and_unload_model(
    hass: HomeAssistant, mock_vigil_client: MagicMock, mock_config_entry: MockConfigEntry
) -> None:
    """Models are loaded and unloaded; the add-on is polled again right after."""
    model = load_json("model_loaded.json")["name"]
    polls = mock_vigil_client.health.await_count
    response = await hass.services.async_call(
        DOMAIN,
        SERVICE_LOAD_MODEL,
        {"model": model, "config_entry_id": mock_config_entry.entry_id},
        blocking=True,
        return_response=True,
    )
    assert response == load_json("model_loaded.json") | {"vram_bytes": 0}
    mock_vigil_client.load_model.assert_awaited_once_with(model, pin=None)
    response = await hass.services.async_call(
        DOMAIN,
        SERVICE_UNLOAD_MODEL,
        {"model": model},
        blocking=True,
        return_response=True,
    )
    assert (response["loaded"], response["state"]) == (False, "unloaded")
    mock_vigil_client.unload_model.assert_awaited_once_with(model)
    await hass.async_block_till_done()
    assert mock_vigil_client.health.await_count > polls


async def test_pin_a_zoo_model(hass: HomeAssistant, mock_vigil_client: MagicMock) -> None:
    """Loading with `pin` returns the add-on's answer: the zoo model loaded and pinned."""
    pinned = load_json("model_pinned.json")
    mock_vigil_client.load_model.return_value = Model.from_dict(pinned)
    response = await hass.services.async_call(
        DOMAIN,
        SERVICE_LOAD_MODEL,
        {"model": pinned["name"], "pin": True},
        blocking=True,
        return_response=True,
    )
    mock_vigil_client.load_model.assert_awaited_once_with(pinned["name"], pin=True)
    assert response == pinned
    assert (response["kind"], response["state"], response["pinned"]) == ("zoo", "loaded", True)


ADDON_ERRORS = [
    (VigilConnectionError("down"), HomeAssistantError, "cannot_connect"),
    (
        VigilResponseError("boom", code="internal_error", status=500),
        HomeAssistantError,
        "addon_error",
    ),
    (VigilAuthenticationError("401"), HomeAssistantError, "invalid_auth"),
]
"""How every action maps the add-on's generic failures (down, 5xx, refused token)."""

ZOO_MODELS = [m["name"] for m in load_json("models.json")["models"] if m["kind"] == "zoo"]


@pytest.mark.parametrize(
    ("model", "pin"), zip(ZOO_MODELS, itertools.cycle([True, False, None]), strict=False)
)
async def test_every_zoo_model_loads_with_pin(
    hass: HomeAssistant, mock_vigil_client: MagicMock, model: str, pin: bool | None
) -> None:
    """Every model /v1/models lists is accepted, and `pin` is passed on (or left out)."""
    data: dict[str, object] = {"model": model}
    if pin is not None:
        data["pin"] = pin
    await hass.services.async_call(DOMAIN, SERVICE_LOAD_MODEL, data, blocking=True)
    mock_vigil_client.load_model.assert_awaited_once_with(model, pin=pin)
    await hass.services.async_call(DOMAIN, SERVICE_UNLOAD_MODEL, {"model": model}, blocking=True)
    mock_vigil_client.unload_model.assert_awaited_once_with(model)


async def test_model_not_listed(hass: HomeAssistant, mock_vigil_client: MagicMock) -> None:
    """A name /v1/models does not list is refused, naming the models there are."""
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            DOMAIN, SERVICE_LOAD_MODEL, {"model": "fall-detector"}, blocking=True
        )
    assert err.value.translation_key == "unknown_model"
    listed = err.value.translation_placeholders["models"].split(", ")
    assert listed == [m["name"] for m in load_json("models.json")["models"]]
    assert "pet_classifier" in listed
    mock_vigil_client.load_model.assert_not_awaited()


@pytest.mark.parametrize(
    ("side_effect", "error", "key"),
    [
        (
            VigilNotFoundError("unknown", code="unknown_model", status=404),
            ServiceValidationError,
            "unknown_model",
        ),
        (
            VigilModelNotInstalledError("no files", code="model_not_installed", status=409),
            HomeAssistantError,
            "model_not_installed",
        ),
        (
            VigilResponseError("deadline passed", code="zoo_busy", status=503),
            HomeAssistantError,
            "zoo_busy",
        ),
        (
            VigilResponseError("import failed", code="model_load_failed", status=503),
            HomeAssistantError,
            "model_load_failed",
        ),
        (
            VigilResponseError("stays loaded", code="not_unloadable", status=409),
            HomeAssistantError,
            "not_unloadable",
        ),
        *ADDON_ERRORS,
    ],
)
async def test_model_errors(
    hass: HomeAssistant,
    mock_vigil_client: MagicMock,
    side_effect: Exception,
    error: type[Exception],
    key: str,
) -> None:
    """Each add-on failure maps to its translated error, naming the model."""
    mock_vigil_client.load_model.side_effect = side_effect
    with pytest.raises(error) as err:
        await hass.services.async_call(
            DOMAIN, SERVICE_LOAD_MODEL, {"model": "pet_classifier"}, blocking=True
        )
    assert err.value.translation_key == key
    if key in ("model_not_installed", "zoo_busy", "model_load_failed", "not_unloadable"):
        assert err.value.translation_placeholders == {
            "model": "pet_classifier",
            "error": side_effect.message,  # type: ignore[attr-defined]
        }
    if isinstance(side_effect, VigilAuthenticationError):
        flows = hass.config_entries.flow.async_progress()
        assert [f["context"]["source"] for f in flows] == [SOURCE_REAUTH]


async def test_model_list_unavailable(hass: HomeAssistant, mock_vigil_client: MagicMock) -> None:
    """The models cannot be listed (add-on down): the action fails before loading anything."""
    mock_vigil_client.models.side_effect = VigilConnectionError("down")
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(DOMAIN, SERVICE_LOAD_MODEL, {"model": "pose"}, blocking=True)
    assert err.value.translation_key == "cannot_connect"
    mock_vigil_client.load_model.assert_not_awaited()


async def test_model_name_validated(hass: HomeAssistant, mock_vigil_client: MagicMock) -> None:
    """A model name that is not a name is refused before anything is sent."""
    with pytest.raises((probatio.Invalid, ServiceValidationError)):
        await hass.services.async_call(
            DOMAIN, SERVICE_LOAD_MODEL, {"model": "../etc/passwd"}, blocking=True
        )
    mock_vigil_client.load_model.assert_not_awaited()


async def test_unknown_config_entry(hass: HomeAssistant, mock_vigil_client: MagicMock) -> None:
    """An unknown config entry id is refused (Home Assistant's translated message)."""
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            DOMAIN, SERVICE_LOAD_MODEL, {"model": "x", "config_entry_id": "nope"}, blocking=True
        )


def _answer(verdict: str | None) -> AnalysisEvent:
    """The add-on's answer to feedback: the event, with its feedback unless withdrawn."""
    event = load_json("event.json")
    if verdict is not None:
        event["feedback"] = {"verdict": verdict, "note": None, "ts": 1764330000.0}
    return AnalysisEvent.from_dict(event)


@pytest.mark.parametrize(
    ("verdict", "answered"),
    [("false_alarm", "false_alarm"), ("confirmed", "confirmed"), ("none", None)],
)
async def test_feedback(
    hass: HomeAssistant,
    mock_vigil_client: MagicMock,
    mock_config_entry: MockConfigEntry,
    verdict: str,
    answered: str | None,
) -> None:
    """vigil.feedback passes the verdict (and note) on and answers what the add-on stored."""
    event_id = load_json("event.json")["id"]
    mock_vigil_client.feedback.return_value = _answer(answered)
    response = await hass.services.async_call(
        DOMAIN,
        SERVICE_FEEDBACK,
        {
            "config_entry_id": mock_config_entry.entry_id,
            "event_id": event_id,
            "verdict": verdict,
            "note": "the dog walker",
        },
        blocking=True,
        return_response=True,
    )
    mock_vigil_client.feedback.assert_awaited_once_with(event_id, verdict, "the dog walker")
    assert response == {"event_id": event_id, "verdict": verdict}


@pytest.mark.parametrize(
    ("side_effect", "error", "key"),
    [
        (
            VigilNotFoundError("no event", code="unknown_event", status=404),
            ServiceValidationError,
            "unknown_event",
        ),
        *ADDON_ERRORS,
    ],
)
async def test_feedback_errors(
    hass: HomeAssistant,
    mock_vigil_client: MagicMock,
    side_effect: Exception,
    error: type[Exception],
    key: str,
) -> None:
    """Each add-on failure maps to its translated error; an unknown event is named."""
    mock_vigil_client.feedback.side_effect = side_effect
    with pytest.raises(error) as err:
        await hass.services.async_call(
            DOMAIN,
            SERVICE_FEEDBACK,
            {"event_id": "0123456789abcdef01234567", "verdict": "false_alarm"},
            blocking=True,
        )
    assert err.value.translation_key == key
    if key == "unknown_event":
        assert err.value.translation_placeholders == {"event_id": "0123456789abcdef01234567"}


@pytest.mark.parametrize(
    "data",
    [
        {"event_id": "../people/x", "verdict": "false_alarm"},
        {"event_id": "0123456789abcdef01234567", "verdict": "maybe"},
        {"event_id": "0123456789abcdef01234567"},
    ],
)
async def test_feedback_validated(
    hass: HomeAssistant, mock_vigil_client: MagicMock, data: dict[str, str]
) -> None:
    """An id that is not an id, or a verdict that is not one, is refused before sending."""
    with pytest.raises((probatio.Invalid, ServiceValidationError)):
        await hass.services.async_call(DOMAIN, SERVICE_FEEDBACK, data, blocking=True)
    mock_vigil_client.feedback.assert_not_awaited()
