"""Actions of the Vigil integration (registered once, in async_setup)."""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import probatio
from homeassistant.components import camera
from homeassistant.components.camera.const import DOMAIN as CAMERA_DOMAIN
from homeassistant.const import ATTR_CONFIG_ENTRY_ID
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.service import async_get_config_entry
from homeassistant.helpers.target import TargetSelection, async_extract_referenced_entity_ids

from .api import (
    AnalysisEvent,
    ImageUpload,
    VigilAuthenticationError,
    VigilConnectionError,
    VigilError,
    VigilModelNotInstalledError,
    VigilNotFoundError,
)
from .const import ATTR_EVENT_ID, DOMAIN
from .coordinator import VigilCameraCoordinator, VigilConfigEntry, enrichment_attributes

SERVICE_ANALYZE = "analyze"
SERVICE_ENROLL_PERSON = "enroll_person"
SERVICE_LOAD_MODEL = "load_model"
SERVICE_UNLOAD_MODEL = "unload_model"
SERVICE_FEEDBACK = "feedback"

ATTR_NAME = "name"
ATTR_CAMERAS = "cameras"
ATTR_FILES = "files"
ATTR_MODEL = "model"
ATTR_PIN = "pin"
ATTR_VERDICT = "verdict"
ATTR_NOTE = "note"

VERDICTS = ("false_alarm", "confirmed", "none")
"""The add-on's feedback verdicts; ``none`` withdraws the event's feedback."""

MODEL_ERRORS = ("zoo_busy", "model_load_failed", "not_unloadable")
"""The add-on's error codes for a model it cannot load or unload (each has a message here)."""

ANALYZE_SCHEMA = cv.make_entity_service_schema({})

ENROLL_SCHEMA = probatio.Schema(
    {
        probatio.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        probatio.Required(ATTR_NAME): probatio.All(
            cv.string, probatio.Strip, probatio.Length(min=1, max=100)
        ),
        probatio.Optional(ATTR_CAMERAS, default=[]): cv.entities_domain(CAMERA_DOMAIN),
        probatio.Optional(ATTR_FILES, default=[]): probatio.All(cv.ensure_list, [cv.string]),
    }
)

MODEL_SCHEMA = probatio.Schema(
    {
        probatio.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        probatio.Required(ATTR_MODEL): probatio.All(
            cv.string, probatio.Match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
        ),
    }
)
FEEDBACK_SCHEMA = probatio.Schema(
    {
        probatio.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        # Ids go into the URL path: letters and digits only, nothing that could leave it.
        probatio.Required(ATTR_EVENT_ID): probatio.All(
            cv.string, probatio.Strip, probatio.Match(r"^[A-Za-z0-9]{1,64}$")
        ),
        probatio.Required(ATTR_VERDICT): probatio.In(VERDICTS),
        probatio.Optional(ATTR_NOTE): probatio.All(cv.string, probatio.Length(max=500)),
    }
)

LOAD_MODEL_SCHEMA = MODEL_SCHEMA.extend({probatio.Optional(ATTR_PIN): cv.boolean})


def event_response(coordinator: VigilCameraCoordinator, event: AnalysisEvent) -> dict[str, Any]:
    """Return an analysis as an action response."""
    return {
        "id": event.id,
        "camera": coordinator.camera_entity_id,
        "timestamp": event.timestamp.isoformat(),
        "risk_score": event.risk_score,
        "risk_level": event.risk_level,
        "summary": event.summary,
        "reasoning": event.reasoning,
        "factors": [f.as_dict() for f in event.factors],
        "counts": {
            "person": event.person_count,
            "vehicle": event.vehicle_count,
            "animal": event.animal_count,
        },
        "notify": event.notify,
        "llm_status": event.llm_status,
        **enrichment_attributes(event.enrichments),
    }


def _camera_coordinators(hass: HomeAssistant) -> dict[str, VigilCameraCoordinator]:
    """Return the configured cameras of every loaded entry, by camera entity id."""
    result: dict[str, VigilCameraCoordinator] = {}
    entry: VigilConfigEntry
    for entry in hass.config_entries.async_loaded_entries(DOMAIN):
        for coordinator in entry.runtime_data.cameras.values():
            result[coordinator.camera_entity_id] = coordinator
    return result


def _unknown_model(model: str, known: Sequence[str]) -> ServiceValidationError:
    return ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="unknown_model",
        translation_placeholders={"model": model, "models": ", ".join(known) or "-"},
    )


@contextmanager
def _addon_errors(
    hass: HomeAssistant,
    entry: VigilConfigEntry,
    model: str | None = None,
    known: Sequence[str] = (),
) -> Iterator[None]:
    """Turn client errors into translated Home Assistant errors (``known``: the models)."""
    try:
        yield
    except VigilAuthenticationError as err:
        entry.async_start_reauth(hass)
        raise HomeAssistantError(translation_domain=DOMAIN, translation_key="invalid_auth") from err
    except VigilConnectionError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="cannot_connect",
            translation_placeholders={"error": err.message},
        ) from err
    except VigilModelNotInstalledError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="model_not_installed",
            translation_placeholders={"model": model or "-", "error": err.message},
        ) from err
    except VigilNotFoundError as err:
        if model is None:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="addon_error",
                translation_placeholders={"error": err.message},
            ) from err
        raise _unknown_model(model, known) from err
    except VigilError as err:
        if model is not None and err.code in MODEL_ERRORS:
            # zoo_busy: no memory could be freed in time (the models in use fill the budget).
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key=err.code,
                translation_placeholders={"model": model, "error": err.message},
            ) from err
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="addon_error",
            translation_placeholders={"error": err.message},
        ) from err


async def _async_analyze(call: ServiceCall) -> ServiceResponse:
    """Analyse the targeted cameras now and return their events."""
    hass = call.hass
    selected = async_extract_referenced_entity_ids(hass, TargetSelection(call.data))
    configured = _camera_coordinators(hass)
    targets: dict[str, VigilCameraCoordinator] = {}
    for entity_id in sorted(selected.referenced | selected.indirectly_referenced):
        if not entity_id.startswith(f"{CAMERA_DOMAIN}."):
            continue
        if (coordinator := configured.get(entity_id)) is not None:
            targets[entity_id] = coordinator
        elif entity_id in selected.referenced:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="camera_not_configured",
                translation_placeholders={"camera": entity_id},
            )
    if not targets:
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="no_cameras")
    events = await asyncio.gather(*(c.async_analyze() for c in targets.values()))
    if not call.return_response:
        return None
    return {
        "events": {
            entity_id: event_response(coordinator, event)
            for (entity_id, coordinator), event in zip(targets.items(), events, strict=True)
        }
    }


def _read_image_file(hass: HomeAssistant, path: str) -> ImageUpload:
    """Read one enrolment image from disk (executor)."""
    if not hass.config.is_allowed_path(path):
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="path_not_allowed",
            translation_placeholders={"path": path},
        )
    file = Path(path)
    if not file.is_file():
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="file_not_found",
            translation_placeholders={"path": path},
        )
    content_type = mimetypes.guess_type(file.name)[0] or "image/jpeg"
    return ImageUpload(content=file.read_bytes(), content_type=content_type)


async def _async_enroll_person(call: ServiceCall) -> ServiceResponse:
    """Enrol a person from camera images and/or image files."""
    hass = call.hass
    entry: VigilConfigEntry = async_get_config_entry(
        hass, DOMAIN, call.data.get(ATTR_CONFIG_ENTRY_ID)
    )
    cameras: list[str] = call.data[ATTR_CAMERAS]
    files: list[str] = call.data[ATTR_FILES]
    if not cameras and not files:
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="no_images")
    images: list[ImageUpload] = []
    for path in files:
        images.append(await hass.async_add_executor_job(_read_image_file, hass, path))
    for entity_id in cameras:
        try:
            image = await camera.async_get_image(hass, entity_id)
        except HomeAssistantError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="camera_image_failed",
                translation_placeholders={"camera": entity_id, "error": str(err)},
            ) from err
        images.append(ImageUpload(content=image.content, content_type=image.content_type))
    with _addon_errors(hass, entry):
        person = await entry.runtime_data.client.enroll_person(call.data[ATTR_NAME], images)
    return {"id": person.id, "name": person.name, "embeddings": person.embeddings}


async def _async_model(call: ServiceCall, *, load: bool) -> ServiceResponse:
    """Load or unload one of the models the add-on lists in /v1/models."""
    hass = call.hass
    entry: VigilConfigEntry = async_get_config_entry(
        hass, DOMAIN, call.data.get(ATTR_CONFIG_ENTRY_ID)
    )
    name: str = call.data[ATTR_MODEL]
    client = entry.runtime_data.client
    with _addon_errors(hass, entry):
        known = [m.name for m in await client.models()]
    if known and name not in known:
        raise _unknown_model(name, known)
    with _addon_errors(hass, entry, model=name, known=known):
        if load:
            model = await client.load_model(name, pin=call.data.get(ATTR_PIN))
        else:
            model = await client.unload_model(name)
    await entry.runtime_data.server.async_request_refresh()
    return model.as_dict()


async def _async_load_model(call: ServiceCall) -> ServiceResponse:
    """Load a model of the add-on's zoo."""
    return await _async_model(call, load=True)


async def _async_unload_model(call: ServiceCall) -> ServiceResponse:
    """Unload a model of the add-on's zoo."""
    return await _async_model(call, load=False)


async def _async_feedback(call: ServiceCall) -> ServiceResponse:
    """Tell the add-on whether an event was a real threat (it calibrates the camera)."""
    hass = call.hass
    entry: VigilConfigEntry = async_get_config_entry(
        hass, DOMAIN, call.data.get(ATTR_CONFIG_ENTRY_ID)
    )
    event_id: str = call.data[ATTR_EVENT_ID]
    with _addon_errors(hass, entry):
        try:
            event = await entry.runtime_data.client.feedback(
                event_id, call.data[ATTR_VERDICT], call.data.get(ATTR_NOTE)
            )
        except VigilNotFoundError as err:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="unknown_event",
                translation_placeholders={"event_id": event_id},
            ) from err
    feedback = event.raw.get("feedback")  # absent once withdrawn
    verdict = feedback.get(ATTR_VERDICT) if isinstance(feedback, Mapping) else None
    return {ATTR_EVENT_ID: event.id, ATTR_VERDICT: verdict or "none"}


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register the Vigil actions."""
    hass.services.async_register(
        DOMAIN,
        SERVICE_ANALYZE,
        _async_analyze,
        schema=ANALYZE_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_ENROLL_PERSON,
        _async_enroll_person,
        schema=ENROLL_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_LOAD_MODEL,
        _async_load_model,
        schema=LOAD_MODEL_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_UNLOAD_MODEL,
        _async_unload_model,
        schema=MODEL_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_FEEDBACK,
        _async_feedback,
        schema=FEEDBACK_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
