"""Coordinators of the Vigil integration.

One server coordinator polls the add-on's /health and its model zoo's /v1/zoo/status; one
camera coordinator per camera subentry holds that camera's latest analysis and runs new
ones when a trigger fires or the `vigil.analyze` action asks.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Concatenate

from homeassistant.components import camera
from homeassistant.config_entries import ConfigEntry, ConfigEntryState, ConfigSubentry
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed, HomeAssistantError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed
from homeassistant.util import dt as dt_util

from .api import (
    AnalysisEvent,
    Enrichments,
    Health,
    ImageUpload,
    VigilAuthenticationError,
    VigilClient,
    VigilConnectionError,
    VigilError,
    VigilNotFoundError,
    ZooStatus,
)
from .const import (
    ATTR_CAMERA,
    ATTR_ENRICHMENTS_SKIPPED,
    ATTR_EVENT_ID,
    ATTR_FACTORS,
    ATTR_LEVEL,
    ATTR_NOTIFY,
    ATTR_PET,
    ATTR_PET_HOUSEHOLD,
    ATTR_PHASE,
    ATTR_PLATE,
    ATTR_POSTURES,
    ATTR_REVISION,
    ATTR_SCORE,
    ATTR_SUMMARY,
    ATTR_THREAT,
    ATTR_THREAT_CONFIDENCE,
    ATTR_VEHICLE_TYPE,
    CONF_CAMERA_ENTITY,
    CONF_LLM,
    CONF_MIN_INTERVAL,
    CONF_NOTIFY_LEVEL,
    CONF_TRIGGER_ENTITIES,
    DEFAULT_MIN_INTERVAL,
    DEFAULT_NOTIFY_LEVEL,
    DOMAIN,
    EVENT_RISK,
    HEALTH_INTERVAL,
    LOGGER,
)
from .home_state import read_home_state
from .stream import VigilEventStream


@dataclass(kw_only=True)
class VigilRuntimeData:
    """What a loaded Vigil config entry holds."""

    client: VigilClient
    server: VigilServerCoordinator
    cameras: dict[str, VigilCameraCoordinator] = field(default_factory=dict)
    """Camera coordinators by subentry id."""
    issues: set[str] = field(default_factory=set)
    """Ids of the repair issues this entry has raised."""
    stream: VigilEventStream | None = None
    """The add-on's event stream, followed while the entry is loaded."""


type VigilConfigEntry = ConfigEntry[VigilRuntimeData]

PUBLISHED_MEMORY = 64
"""Events per camera whose published revision is remembered (a refinement comes seconds after
its event, so only the newest few can still get one)."""


@dataclass(frozen=True, kw_only=True)
class VigilServerData:
    """What one poll of the add-on gives: its /health and its model zoo's status."""

    health: Health
    zoo: ZooStatus | None
    """None: an add-on without a model zoo (it answers /v1/zoo/status with 404)."""


def camera_id_for(entity_id: str) -> str:
    """Return the add-on camera id ([a-z0-9_]{1,64}) for a camera entity id."""
    object_id = entity_id.split(".", 1)[-1].lower()
    cid = re.sub(r"[^a-z0-9_]+", "_", object_id).strip("_")[:64]
    return cid or "camera"


def enrichment_attributes(enrichments: Enrichments) -> dict[str, Any]:
    """The enrichments of an event, flat: one value per question an automation asks.

    The most confident threat (label and confidence), the persons' postures, the most
    confident animal (species, and whether it is a household pet), vehicle type and plate,
    and why triggered models gave nothing (model -> reason). A key is absent when no model
    found that, so `{{ trigger.to_state.attributes.threat is defined }}` reads as it says.
    """
    attributes: dict[str, Any] = {}
    if threats := enrichments.threats:
        attributes[ATTR_THREAT] = threats[0].label
        attributes[ATTR_THREAT_CONFIDENCE] = threats[0].confidence
    if postures := enrichments.postures:
        attributes[ATTR_POSTURES] = list(postures)
    if pets := enrichments.pets:
        attributes[ATTR_PET] = pets[0].species
        attributes[ATTR_PET_HOUSEHOLD] = pets[0].household
    if vehicles := enrichments.vehicles:
        attributes[ATTR_VEHICLE_TYPE] = vehicles[0].vehicle_type
    if plates := enrichments.plates:
        attributes[ATTR_PLATE] = plates[0].text
    if enrichments.skipped:
        attributes[ATTR_ENRICHMENTS_SKIPPED] = {
            name: skip.reason for name, skip in sorted(enrichments.skipped.items())
        }
    return attributes


def _update_errors[C: VigilServerCoordinator | VigilCameraCoordinator, **P, R](
    func: Callable[Concatenate[C, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[C, P], Coroutine[Any, Any, R]]:
    """Map client errors raised in a coordinator update to Home Assistant's."""

    async def handler(self: C, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await func(self, *args, **kwargs)
        except VigilAuthenticationError as err:
            if self.config_entry.state is ConfigEntryState.LOADED:
                # Not the first refresh: reload so that setup raises the reauth flow.
                self.hass.config_entries.async_schedule_reload(self.config_entry.entry_id)
            raise ConfigEntryAuthFailed(
                translation_domain=DOMAIN, translation_key="invalid_auth"
            ) from err
        except VigilConnectionError as err:
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="cannot_connect",
                translation_placeholders={"error": err.message},
            ) from err
        except VigilError as err:
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="addon_error",
                translation_placeholders={"error": err.message},
            ) from err

    return handler


class VigilServerCoordinator(DataUpdateCoordinator[VigilServerData]):
    """Polls the add-on's /health and /v1/zoo/status every 30 seconds.

    The zoo status is an authenticated call, so the same poll checks that the token
    still works.
    """

    config_entry: VigilConfigEntry

    def __init__(self, hass: HomeAssistant, entry: VigilConfigEntry, client: VigilClient) -> None:
        """Initialize the coordinator."""
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=entry.title,
            update_interval=HEALTH_INTERVAL,
        )
        self.client = client
        self.device_id: str | None = None
        """The server device's registry id, once registered."""

    @_update_errors
    async def _async_update_data(self) -> VigilServerData:
        """Fetch /health, then the zoo status (authenticated: it checks the token too)."""
        health = await self.client.health()
        return VigilServerData(health=health, zoo=await self.client.zoo_status())

    @property
    def instance_id(self) -> str:
        """Return the add-on's instance id (the entry's unique id)."""
        return self.config_entry.unique_id or self.config_entry.entry_id

    @property
    def unique_id_prefix(self) -> str:
        """Return the prefix of this coordinator's entities' unique ids."""
        return self.instance_id

    @property
    def server_available(self) -> bool:
        """Return whether the add-on answers."""
        return self.last_update_success

    @property
    def device_identifier(self) -> tuple[str, str]:
        """Return the server device's identifier."""
        return (DOMAIN, self.instance_id)

    @property
    def device_info(self) -> DeviceInfo:
        """Return the server device.

        It is named for what it is (translation `addon`: "Vigil"), so that its entities'
        ids read `sensor.vigil_status`; where it runs (host and port) is the configuration
        URL, which points at the open /health page.
        """
        return DeviceInfo(
            identifiers={self.device_identifier},
            translation_key="addon",
            manufacturer="Vigil",
            model="Vigil add-on",
            sw_version=self.data.health.version if self.data else None,
            configuration_url=str(self.client.base_url.with_path("/health")),
            entry_type=DeviceEntryType.SERVICE,
        )

    @callback
    def async_add_server_listener(self, update_callback: CALLBACK_TYPE) -> CALLBACK_TYPE:
        """Server entities already follow this coordinator: nothing more to listen to."""
        return lambda: None


class VigilCameraCoordinator(DataUpdateCoordinator[AnalysisEvent | None]):
    """Holds one camera's latest analysis and runs new ones (no polling)."""

    config_entry: VigilConfigEntry

    def __init__(
        self,
        hass: HomeAssistant,
        entry: VigilConfigEntry,
        subentry: ConfigSubentry,
        client: VigilClient,
        server: VigilServerCoordinator,
    ) -> None:
        """Initialize the coordinator."""
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=f"Vigil {subentry.title}",
            update_interval=None,
        )
        self.client = client
        self.server = server
        self.subentry = subentry
        self.camera_entity_id: str = subentry.data[CONF_CAMERA_ENTITY]
        self.camera_id = camera_id_for(self.camera_entity_id)
        self.trigger_entity_ids: list[str] = list(subentry.data.get(CONF_TRIGGER_ENTITIES, []))
        self.min_interval = float(subentry.data.get(CONF_MIN_INTERVAL, DEFAULT_MIN_INTERVAL))
        self.llm = bool(subentry.data.get(CONF_LLM, True))
        self.notify_level: str = subentry.data.get(CONF_NOTIFY_LEVEL, DEFAULT_NOTIFY_LEVEL)
        """Sent with every analysis: the add-on marks events from this level `notify`."""
        self._inflight: asyncio.Task[AnalysisEvent] | None = None
        self._last_started: float | None = None
        self._failing = False
        self._snapshot: tuple[str, bytes] | None = None
        self._revisions: dict[str, int] = {}
        """Newest revision published per event id (the newest PUBLISHED_MEMORY events)."""

    @_update_errors
    async def _async_update_data(self) -> AnalysisEvent | None:
        """Read the camera's newest stored event (only at setup: there is no polling)."""
        try:
            return await self.client.latest_event(self.camera_id)
        except VigilNotFoundError:
            # An add-on without an event store: start empty.
            return None

    # ------------------------------------------------------------------ identity

    @property
    def unique_id_prefix(self) -> str:
        """Return the prefix of this camera's entities' unique ids."""
        return f"{self.server.instance_id}_{self.subentry.subentry_id}"

    @property
    def server_available(self) -> bool:
        """Return whether the add-on answers."""
        return self.server.last_update_success

    @property
    def device_info(self) -> DeviceInfo:
        """Return the per-camera device, linked to the camera's own device if any."""
        info = DeviceInfo(
            identifiers={(DOMAIN, self.unique_id_prefix)},
            name=self.subentry.title,
            manufacturer="Vigil",
            model="Camera risk analysis",
        )
        via_device_id = self.server.device_id
        entity = er.async_get(self.hass).async_get(self.camera_entity_id)
        if entity is not None and entity.device_id is not None:
            via_device_id = entity.device_id
        if via_device_id is not None:
            info["via_device_id"] = via_device_id
        return info

    @callback
    def async_add_server_listener(self, update_callback: CALLBACK_TYPE) -> CALLBACK_TYPE:
        """Let camera entities follow the add-on's availability."""
        return self.server.async_add_listener(update_callback)

    # ------------------------------------------------------------------ analysis

    @property
    def busy(self) -> bool:
        """Return whether an analysis of this camera is running."""
        return self._inflight is not None

    @callback
    def async_trigger(self) -> bool:
        """Start an analysis for a trigger, unless busy, debounced or the add-on is down.

        Returns whether an analysis was started.
        """
        if self._inflight is not None:
            LOGGER.debug("%s: analysis already running, trigger ignored", self.camera_entity_id)
            return False
        if not self.server.last_update_success:
            LOGGER.debug("%s: add-on unavailable, trigger ignored", self.camera_entity_id)
            return False
        if (
            self._last_started is not None
            and time.monotonic() - self._last_started < self.min_interval
        ):
            LOGGER.debug(
                "%s: within %ss of the last analysis, trigger ignored",
                self.camera_entity_id,
                self.min_interval,
            )
            return False
        self._start(from_trigger=True)
        return True

    async def async_analyze(self) -> AnalysisEvent:
        """Analyse now (the action); join an analysis already running for this camera."""
        task = self._inflight or self._start(from_trigger=False)
        return await asyncio.shield(task)

    def _start(self, *, from_trigger: bool) -> asyncio.Task[AnalysisEvent]:
        self._last_started = time.monotonic()
        task = self.config_entry.async_create_background_task(
            self.hass, self._async_run_analysis(), f"vigil analysis {self.camera_entity_id}"
        )
        self._inflight = task

        @callback
        def _done(done: asyncio.Task[AnalysisEvent]) -> None:
            if self._inflight is done:
                self._inflight = None
            if done.cancelled():
                return
            err = done.exception()  # also marks it retrieved
            if err is None:
                if self._failing:
                    LOGGER.info("%s: analyses work again", self.camera_entity_id)
                self._failing = False
            elif from_trigger and not self._failing:
                # Logged once per outage; the action path raises to its caller instead.
                self._failing = True
                LOGGER.warning("%s: analysis failed: %s", self.camera_entity_id, err)

        task.add_done_callback(_done)
        return task

    async def _async_run_analysis(self) -> AnalysisEvent:
        """Grab the camera image, send it to the add-on, publish the result."""
        try:
            image = await camera.async_get_image(self.hass, self.camera_entity_id)
        except HomeAssistantError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="camera_image_failed",
                translation_placeholders={"camera": self.camera_entity_id, "error": str(err)},
            ) from err
        try:
            event = await self.client.analyze(
                ImageUpload(content=image.content, content_type=image.content_type),
                camera=self.camera_id,
                llm=self.llm,
                timestamp=dt_util.now(),
                notify_level=self.notify_level,
                home_state=read_home_state(self.hass, self.config_entry.options),
            )
        except VigilAuthenticationError as err:
            self.config_entry.async_start_reauth(self.hass)
            raise HomeAssistantError(
                translation_domain=DOMAIN, translation_key="invalid_auth"
            ) from err
        except VigilConnectionError as err:
            await self.server.async_request_refresh()
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="cannot_connect",
                translation_placeholders={"error": err.message},
            ) from err
        except VigilError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="analysis_failed",
                translation_placeholders={"camera": self.camera_entity_id, "error": err.message},
            ) from err
        self.async_publish(event)
        return event

    @callback
    def async_publish(self, event: AnalysisEvent) -> bool:
        """Publish a revision of one of this camera's events once, whichever way it came.

        The analysis' answer and the add-on's event stream both bring revision 1, and the
        stream brings the LLM's revision 2 later: each (event, revision) updates the entities
        and fires the bus event once, and an older revision arriving late is dropped. A new
        event (revision 1) always takes the entities; a refinement takes them only while its
        event is the one shown (one of an earlier event fires its bus event alone). Returns
        whether it was published.
        """
        if event.revision <= self._revisions.get(event.id, 0):
            return False
        self._revisions[event.id] = event.revision
        while len(self._revisions) > PUBLISHED_MEMORY:
            del self._revisions[next(iter(self._revisions))]
        current = self.data
        if current is None or event.revision == 1 or current.id == event.id:
            self.async_set_updated_data(event)
        self.hass.bus.async_fire(EVENT_RISK, self.event_data(event))
        return True

    def event_data(self, event: AnalysisEvent) -> dict[str, Any]:
        """Return the data of the vigil_risk_event bus event."""
        return {
            ATTR_CAMERA: self.camera_entity_id,
            ATTR_LEVEL: event.risk_level,
            ATTR_SCORE: event.risk_score,
            ATTR_SUMMARY: event.summary,
            ATTR_EVENT_ID: event.id,
            ATTR_NOTIFY: event.notify,
            ATTR_FACTORS: [f.as_dict() for f in event.factors],
            ATTR_PHASE: event.phase,
            ATTR_REVISION: event.revision,
            **enrichment_attributes(event.enrichments),
        }

    async def async_snapshot(self, event_id: str) -> bytes:
        """Return an event's annotated snapshot (the latest one is cached)."""
        if self._snapshot is not None and self._snapshot[0] == event_id:
            return self._snapshot[1]
        content = await self.client.snapshot(event_id)
        self._snapshot = (event_id, content)
        return content
