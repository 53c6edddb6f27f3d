"""Config flow of the Vigil integration: the add-on server, its options and its cameras."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import probatio
from homeassistant.components.binary_sensor.const import DOMAIN as BINARY_SENSOR_DOMAIN
from homeassistant.components.camera.const import DOMAIN as CAMERA_DOMAIN
from homeassistant.config_entries import (
    SOURCE_USER,
    ConfigEntry,
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryFlow,
    OptionsFlow,
    SubentryFlowResult,
)
from homeassistant.const import CONF_API_TOKEN, CONF_HOST, CONF_PORT, CONF_SSL
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import (
    BooleanSelector,
    EntitySelector,
    EntitySelectorConfig,
    EntityWithDeviceFilterSelectorConfig,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)

from .api import (
    ComputeDevice,
    GpuAssignment,
    Health,
    VigilAuthenticationError,
    VigilClient,
    VigilConnectionError,
    VigilError,
    VigilNotFoundError,
    VigilResponseError,
)
from .const import (
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
    DEFAULT_MIN_INTERVAL,
    DEFAULT_NOTIFY_LEVEL,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
    DOMAIN,
    HEALTH_TIMEOUT,
    HOME_STATE_OPTIONS,
    LOGGER,
    RISK_LEVELS,
    SUBENTRY_CAMERA,
    TRIGGER_DEVICE_CLASSES,
)

SERVER_SCHEMA = probatio.Schema(
    {
        probatio.Required(CONF_HOST): TextSelector(TextSelectorConfig(autocomplete="off")),
        probatio.Required(CONF_PORT, default=DEFAULT_PORT): NumberSelector(
            NumberSelectorConfig(min=1, max=65535, step=1, mode=NumberSelectorMode.BOX)
        ),
        probatio.Optional(CONF_API_TOKEN): TextSelector(
            TextSelectorConfig(type=TextSelectorType.PASSWORD)
        ),
        probatio.Required(CONF_SSL, default=False): BooleanSelector(),
    }
)

TOKEN_SCHEMA = probatio.Schema(
    {
        probatio.Optional(CONF_API_TOKEN): TextSelector(
            TextSelectorConfig(type=TextSelectorType.PASSWORD)
        ),
    }
)


def _entities(*filters: EntityWithDeviceFilterSelectorConfig, multiple: bool) -> EntitySelector:
    return EntitySelector(EntitySelectorConfig(filter=list(filters), multiple=multiple))


OPTIONS_SCHEMA = probatio.Schema(
    {
        probatio.Required(CONF_REQUEST_TIMEOUT, default=DEFAULT_REQUEST_TIMEOUT): NumberSelector(
            NumberSelectorConfig(
                min=5, max=600, step=1, unit_of_measurement="s", mode=NumberSelectorMode.BOX
            )
        ),
        # The home's state, sent with every analysis as evidence (home_state).
        probatio.Optional(CONF_ALARM_ENTITY): _entities(
            EntityWithDeviceFilterSelectorConfig(domain="alarm_control_panel"), multiple=False
        ),
        probatio.Optional(CONF_PRESENCE_ENTITIES): _entities(
            EntityWithDeviceFilterSelectorConfig(domain=["person", "device_tracker"]),
            EntityWithDeviceFilterSelectorConfig(
                domain=BINARY_SENSOR_DOMAIN, device_class=["presence", "occupancy"]
            ),
            multiple=True,
        ),
        probatio.Optional(CONF_DOOR_ENTITIES): _entities(
            EntityWithDeviceFilterSelectorConfig(
                domain=BINARY_SENSOR_DOMAIN,
                device_class=["door", "garage_door", "opening", "window"],
            ),
            multiple=True,
        ),
        probatio.Optional(CONF_LOCK_ENTITIES): _entities(
            EntityWithDeviceFilterSelectorConfig(domain="lock"), multiple=True
        ),
        probatio.Optional(CONF_GUESTS_ENTITY): _entities(
            EntityWithDeviceFilterSelectorConfig(domain=["input_boolean", "switch"]),
            multiple=False,
        ),
    }
)

CAMERA_SCHEMA = probatio.Schema(
    {
        probatio.Required(CONF_CAMERA_ENTITY): EntitySelector(
            EntitySelectorConfig(filter=EntityWithDeviceFilterSelectorConfig(domain=CAMERA_DOMAIN))
        ),
        probatio.Optional(CONF_TRIGGER_ENTITIES, default=[]): EntitySelector(
            EntitySelectorConfig(
                filter=EntityWithDeviceFilterSelectorConfig(
                    domain=BINARY_SENSOR_DOMAIN, device_class=list(TRIGGER_DEVICE_CLASSES)
                ),
                multiple=True,
            )
        ),
        probatio.Required(CONF_MIN_INTERVAL, default=DEFAULT_MIN_INTERVAL): NumberSelector(
            NumberSelectorConfig(
                min=0, max=3600, step=1, unit_of_measurement="s", mode=NumberSelectorMode.BOX
            )
        ),
        probatio.Required(CONF_LLM, default=True): BooleanSelector(),
        probatio.Required(CONF_NOTIFY_LEVEL, default=DEFAULT_NOTIFY_LEVEL): SelectSelector(
            SelectSelectorConfig(
                options=list(RISK_LEVELS),
                translation_key=CONF_NOTIFY_LEVEL,
                mode=SelectSelectorMode.DROPDOWN,
            )
        ),
    }
)


async def _async_validate(
    hass: HomeAssistant, data: Mapping[str, Any], errors: dict[str, str]
) -> Health | None:
    """Check the add-on: /health answers and the token is accepted; fill errors if not."""
    client = VigilClient(
        async_get_clientsession(hass),
        host=data[CONF_HOST],
        port=int(data[CONF_PORT]),
        token=data.get(CONF_API_TOKEN),
        ssl=data.get(CONF_SSL, False),
        request_timeout=HEALTH_TIMEOUT,
        health_timeout=HEALTH_TIMEOUT,
    )
    try:
        health = await client.health()
        await client.verify_auth()
    except VigilConnectionError:
        errors["base"] = "cannot_connect"
    except VigilAuthenticationError:
        errors[CONF_API_TOKEN] = "invalid_auth"
    except Exception:
        LOGGER.exception("Unexpected error while checking the Vigil add-on")
        errors["base"] = "unknown"
    else:
        return health
    return None


def _server_data(user_input: Mapping[str, Any]) -> dict[str, Any]:
    """Return entry data from the server form (port as int, empty token dropped)."""
    data: dict[str, Any] = {
        CONF_HOST: str(user_input[CONF_HOST]).strip(),
        CONF_PORT: int(user_input[CONF_PORT]),
        CONF_SSL: bool(user_input.get(CONF_SSL, False)),
    }
    if token := user_input.get(CONF_API_TOKEN):
        data[CONF_API_TOKEN] = token
    return data


class VigilConfigFlow(ConfigFlow, domain=DOMAIN):
    """Set up a Vigil add-on."""

    VERSION = 1

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the add-on's address and token."""
        errors: dict[str, str] = {}
        if user_input is not None:
            data = _server_data(user_input)
            if (health := await _async_validate(self.hass, data, errors)) is not None:
                await self.async_set_unique_id(health.instance_id, raise_on_progress=False)
                self._abort_if_unique_id_configured(updates=data)
                return self.async_create_entry(title=f"Vigil ({data[CONF_HOST]})", data=data)
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(SERVER_SCHEMA, user_input),
            errors=errors,
        )

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """Start re-authentication: the add-on refused the token."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for a new API token."""
        errors: dict[str, str] = {}
        entry = self._get_reauth_entry()
        if user_input is not None:
            data = {k: v for k, v in entry.data.items() if k != CONF_API_TOKEN}
            data = _server_data(data | user_input)
            if (health := await _async_validate(self.hass, data, errors)) is not None:
                await self.async_set_unique_id(health.instance_id)
                self._abort_if_unique_id_mismatch(reason="wrong_instance")
                return self.async_update_reload_and_abort(entry, data=data)
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=TOKEN_SCHEMA,
            description_placeholders={"host": entry.data[CONF_HOST]},
            errors=errors,
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the add-on's address, token or SSL setting."""
        errors: dict[str, str] = {}
        entry = self._get_reconfigure_entry()
        if user_input is not None:
            data = _server_data(user_input)
            if (health := await _async_validate(self.hass, data, errors)) is not None:
                await self.async_set_unique_id(health.instance_id)
                self._abort_if_unique_id_mismatch(reason="wrong_instance")
                return self.async_update_reload_and_abort(entry, data=data)
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                SERVER_SCHEMA, user_input if user_input is not None else dict(entry.data)
            ),
            errors=errors,
        )

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> VigilOptionsFlow:
        """Return the options flow."""
        return VigilOptionsFlow()

    @classmethod
    @callback
    def async_get_supported_subentry_types(
        cls, config_entry: ConfigEntry
    ) -> dict[str, type[ConfigSubentryFlow]]:
        """Cameras are subentries."""
        return {SUBENTRY_CAMERA: CameraSubentryFlow}


CONF_BUDGET_GB = "budget_gb"
CONF_SERVICES = "services"
GPU_SERVICES = ("detector", "llm", "zoo")
"""The add-on's services a device can host (its contract's enum; test_options_gpu checks)."""
GIB = 1024**3


def _gpu_schema(gpu: ComputeDevice) -> probatio.Schema:
    """One GPU's form: its budget (empty: the add-on's default) and the services it hosts."""
    budget = NumberSelectorConfig(
        min=0, step=0.1, unit_of_measurement="GB", mode=NumberSelectorMode.BOX
    )
    if gpu.total_bytes:
        budget["max"] = round(gpu.total_bytes / GIB, 1)
    return probatio.Schema(
        {
            probatio.Optional(CONF_BUDGET_GB): NumberSelector(budget),
            probatio.Optional(CONF_SERVICES, default=[]): SelectSelector(
                SelectSelectorConfig(
                    options=list(GPU_SERVICES),
                    multiple=True,
                    translation_key="gpu_services",
                    mode=SelectSelectorMode.LIST,
                )
            ),
        }
    )


def _gb(nbytes: int) -> str:
    return f"{nbytes / GIB:.1f} GB"


def _running(assignment: GpuAssignment) -> str:
    """The placement and budgets the add-on runs with now, one line per GPU."""
    return "\n".join(
        f"- {gpu.id} ({gpu.name}): {', '.join(gpu.services) or '-'}; "
        f"budget {_gb(gpu.budget_bytes)} of {_gb(gpu.total_bytes)}"
        for gpu in assignment.gpus
    )


def _entries_text(entries: Mapping[str, Mapping[str, Any]] | None) -> str:
    if entries is None:
        return "-"
    return "\n".join(
        f"- {device}: {', '.join(entry.get(CONF_SERVICES, [])) or '-'}; budget "
        + (f"{entry[CONF_BUDGET_GB]:g} GB" if entry.get(CONF_BUDGET_GB) is not None else "default")
        for device, entry in entries.items()
    )


def _meaningful(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The entries without those that say nothing (no budget, no services): the same
    assignment whether or not a GPU has an empty entry."""
    return {
        device: dict(entry)
        for device, entry in entries.items()
        if entry.get(CONF_SERVICES) or entry.get(CONF_BUDGET_GB) is not None
    }


class VigilOptionsFlow(OptionsFlow):
    """Server-wide settings (the entry reloads through its update listener), then, when the
    add-on runs on a GPU host, its GPU assignment: one form per GPU, applied through the
    add-on, which writes it for its next start (restarting the container stays the user's)."""

    def __init__(self) -> None:
        """Initialize the flow."""
        self._options: dict[str, Any] = {}
        self._assignment: GpuAssignment | None = None
        self._entries: dict[str, dict[str, Any]] = {}
        self._index = 0

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Show the options."""
        if user_input is not None:
            self._options = {CONF_REQUEST_TIMEOUT: int(user_input[CONF_REQUEST_TIMEOUT])}
            self._options |= {k: user_input[k] for k in HOME_STATE_OPTIONS if user_input.get(k)}
            self._assignment = await self._async_fetch_assignment()
            if self._assignment is None or not self._assignment.gpus:
                return self.async_create_entry(data=self._options)
            base = self._assignment.pending or self._assignment.assignment
            self._entries = {device: dict(entry) for device, entry in base.items()}
            return await self.async_step_gpu()
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(
                OPTIONS_SCHEMA, dict(self.config_entry.options)
            ),
        )

    def _client(self) -> VigilClient | None:
        entry = self.config_entry
        if entry.state is not ConfigEntryState.LOADED:
            return None
        client: VigilClient = entry.runtime_data.client
        return client

    async def _async_fetch_assignment(self) -> GpuAssignment | None:
        """The add-on's GPU assignment; None when it cannot say (the entry is not loaded,
        an add-on without the route, or it is unreachable: the other options still apply)."""
        if (client := self._client()) is None:
            return None
        try:
            return await client.gpu_assignment()
        except VigilNotFoundError:
            return None
        except VigilError as err:
            LOGGER.warning("Cannot read the Vigil add-on's GPU assignment: %s", err)
            return None

    async def async_step_gpu(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Show and change one GPU's budget and services; after the last, apply them all."""
        assert self._assignment is not None
        gpus = self._assignment.gpus
        if user_input is not None:
            entry: dict[str, Any] = {CONF_SERVICES: list(user_input.get(CONF_SERVICES, []))}
            if (budget := user_input.get(CONF_BUDGET_GB)) is not None:
                entry[CONF_BUDGET_GB] = float(budget)
            self._entries[gpus[self._index].id] = entry
            self._index += 1
            if self._index < len(gpus):
                return self._show_gpu_form({})
            return await self._async_apply()
        return self._show_gpu_form({})

    def _show_gpu_form(self, errors: dict[str, str], message: str = "") -> ConfigFlowResult:
        assert self._assignment is not None
        gpus = self._assignment.gpus
        gpu = gpus[self._index]
        return self.async_show_form(
            step_id="gpu",
            data_schema=self.add_suggested_values_to_schema(
                _gpu_schema(gpu), self._entries.get(gpu.id, {})
            ),
            errors=errors,
            description_placeholders={
                "device": gpu.id,
                "name": gpu.name,
                "memory": _gb(gpu.total_bytes),
                "position": f"{self._index + 1}/{len(gpus)}",
                "running": _running(self._assignment),
                "pending": _entries_text(self._assignment.pending),
                "error": message,
            },
        )

    async def _async_apply(self) -> ConfigFlowResult:
        """Send the new assignment; the add-on writes it and says a restart is needed."""
        assert self._assignment is not None
        on_gpus = {s for gpu in self._assignment.gpus for s in self._entries[gpu.id][CONF_SERVICES]}
        gpu_ids = {gpu.id for gpu in self._assignment.gpus}
        for device, entry in self._entries.items():
            if device not in gpu_ids:  # a service moved onto a GPU leaves the CPU
                entry[CONF_SERVICES] = [s for s in entry.get(CONF_SERVICES, []) if s not in on_gpus]
        base = self._assignment.pending or self._assignment.assignment
        if _meaningful(self._entries) == _meaningful(base):
            return self.async_create_entry(data=self._options)  # nothing changed
        client = self._client()
        errors: dict[str, str] = {}
        message = ""
        try:
            if client is None:
                raise VigilConnectionError("the integration is not loaded")
            result = await client.gpu_assignment(self._entries)
        except VigilResponseError as err:
            errors["base"] = "invalid_assignment"
            message = err.message
        except VigilError as err:
            errors["base"] = "cannot_connect"
            message = err.message
        else:
            if result.restart_required:
                # /health now reports restart_required: show it as a repair at once.
                await self.config_entry.runtime_data.server.async_request_refresh()
            return self.async_create_entry(data=self._options)
        self._index = 0  # the add-on names the key; walk the GPUs again from the first
        return self._show_gpu_form(errors, message)


class CameraSubentryFlow(ConfigSubentryFlow):
    """Add or change one camera of the add-on."""

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Add a camera."""
        return await self._async_step_camera(user_input)

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Change a camera."""
        return await self._async_step_camera(user_input)

    async def _async_step_camera(self, user_input: dict[str, Any] | None) -> SubentryFlowResult:
        is_new = self.source == SOURCE_USER
        entry = self._get_entry()
        current = None if is_new else self._get_reconfigure_subentry()
        errors: dict[str, str] = {}
        if user_input is not None:
            camera = user_input[CONF_CAMERA_ENTITY]
            taken = {
                sub.data.get(CONF_CAMERA_ENTITY)
                for sub in entry.subentries.values()
                if sub.subentry_type == SUBENTRY_CAMERA
                and (current is None or sub.subentry_id != current.subentry_id)
            }
            state = self.hass.states.get(camera)
            if camera in taken:
                errors[CONF_CAMERA_ENTITY] = "camera_already_configured"
            elif state is None:
                errors[CONF_CAMERA_ENTITY] = "camera_not_found"
            else:
                data = {
                    CONF_CAMERA_ENTITY: camera,
                    CONF_TRIGGER_ENTITIES: list(user_input.get(CONF_TRIGGER_ENTITIES, [])),
                    CONF_MIN_INTERVAL: int(user_input[CONF_MIN_INTERVAL]),
                    CONF_LLM: bool(user_input[CONF_LLM]),
                    CONF_NOTIFY_LEVEL: user_input[CONF_NOTIFY_LEVEL],
                }
                title = state.name
                if current is None:
                    return self.async_create_entry(title=title, data=data, unique_id=camera)
                return self.async_update_and_abort(
                    entry, current, title=title, data=data, unique_id=camera
                )
        suggested: Mapping[str, Any] | None = user_input
        if suggested is None and current is not None:
            suggested = current.data
        return self.async_show_form(
            step_id="user" if is_new else "reconfigure",
            data_schema=self.add_suggested_values_to_schema(CAMERA_SCHEMA, suggested),
            errors=errors,
        )
