"""Tests of setting the Vigil integration up and down, and of its faults."""

from __future__ import annotations

from http import HTTPStatus
from unittest.mock import MagicMock

import pytest
from aiohttp.test_utils import TestServer
from custom_components.vigil.api import (
    Health,
    VigilAuthenticationError,
    VigilConnectionError,
    VigilNotFoundError,
    VigilResponseError,
    ZooStatus,
)
from custom_components.vigil.const import (
    CONF_CAMERA_ENTITY,
    CONF_LLM,
    CONF_MIN_INTERVAL,
    CONF_NOTIFY_LEVEL,
    CONF_TRIGGER_ENTITIES,
    DOMAIN,
    HEALTH_INTERVAL,
    SUBENTRY_CAMERA,
)
from custom_components.vigil.coordinator import camera_id_for
from freezegun.api import FrozenDateTimeFactory
from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState, ConfigSubentry
from homeassistant.const import (
    CONF_API_TOKEN,
    CONF_PORT,
    STATE_OFF,
    STATE_ON,
    STATE_UNAVAILABLE,
    STATE_UNKNOWN,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from .conftest import (
    CAMERA_SUBENTRY_ID,
    INSTANCE_ID,
    FakeCamera,
    camera_subentry,
    gpu_host,
    load_json,
)
from .test_api import TOKEN, StandIn

RISK_SCORE = "sensor.front_door_risk_score"
STORED_SCORE = str(load_json("events.json")["events"][0]["risk_score"])
"""The camera's stored event (recorded) that the entry starts with."""
CONNECTIVITY = "binary_sensor.vigil_connectivity"


async def test_load_unload(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    """The entry loads with the camera's stored event, and unloads."""
    assert init_integration.state is ConfigEntryState.LOADED
    assert hass.states.get(RISK_SCORE).state == STORED_SCORE
    assert await hass.config_entries.async_unload(init_integration.entry_id)
    await hass.async_block_till_done()
    assert init_integration.state is ConfigEntryState.NOT_LOADED


@pytest.mark.parametrize(
    ("method", "side_effect", "state"),
    [
        ("health", VigilConnectionError("down"), ConfigEntryState.SETUP_RETRY),
        ("health", VigilResponseError("bad"), ConfigEntryState.SETUP_RETRY),
        ("zoo_status", VigilAuthenticationError("401"), ConfigEntryState.SETUP_ERROR),
        ("latest_event", VigilConnectionError("down"), ConfigEntryState.SETUP_RETRY),
    ],
)
@pytest.mark.usefixtures("fake_camera")
async def test_setup_failures(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    mock_vigil_client: MagicMock,
    method: str,
    side_effect: Exception,
    state: ConfigEntryState,
) -> None:
    """An unreachable add-on retries later; a refused token asks to re-authenticate."""
    getattr(mock_vigil_client, method).side_effect = side_effect
    mock_config_entry.add_to_hass(hass)
    await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    assert mock_config_entry.state is state
    flows = hass.config_entries.flow.async_progress()
    assert bool(flows) is (state is ConfigEntryState.SETUP_ERROR)
    if flows:
        assert flows[0]["context"]["source"] == SOURCE_REAUTH


async def test_no_event_store(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    mock_vigil_client: MagicMock,
    fake_camera: FakeCamera,
    hass_client: ClientSessionGenerator,
) -> None:
    """An add-on without /v1/events starts the cameras empty (and without a snapshot)."""
    mock_vigil_client.latest_event.side_effect = VigilNotFoundError("no route", status=404)
    mock_config_entry.add_to_hass(hass)
    await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    assert mock_config_entry.state is ConfigEntryState.LOADED
    assert hass.states.get(RISK_SCORE).state == STATE_UNKNOWN
    assert hass.states.get("binary_sensor.front_door_threat").state == STATE_UNKNOWN
    client = await hass_client()
    resp = await client.get("/api/image_proxy/image.front_door_last_snapshot")
    assert resp.status == HTTPStatus.INTERNAL_SERVER_ERROR
    mock_vigil_client.snapshot.assert_not_awaited()


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
@pytest.mark.parametrize("health_document", [gpu_host(load_json("health.json"))])
async def test_gpu_gone(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_vigil_client: MagicMock,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A GPU that disappears from /health leaves its sensors unknown."""
    budget = "sensor.vigil_cuda_0_memory_budget"
    assert float(hass.states.get(budget).state) == pytest.approx(22.0, abs=0.01)
    mock_vigil_client.health.return_value = Health.from_dict(load_json("health_degraded.json"))
    freezer.tick(HEALTH_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert hass.states.get(budget).state == STATE_UNKNOWN
    assert hass.states.get("sensor.vigil_status").state == "degraded"


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
@pytest.mark.parametrize("health_document", [gpu_host(load_json("health.json"))])
async def test_gpu_added_at_runtime(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_vigil_client: MagicMock,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A GPU the add-on reports later gets its sensors without a reload."""
    health = gpu_host(load_json("health.json"))
    second = dict(health["devices"][-1], id="cuda:1", used_bytes=0)
    health["devices"].append(second)
    mock_vigil_client.health.return_value = Health.from_dict(health)
    freezer.tick(HEALTH_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert hass.states.get("sensor.vigil_cuda_1_memory_budget") is not None
    assert hass.states.get("sensor.vigil_cuda_0_memory_budget") is not None


async def test_zoo_follows_the_addon(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_vigil_client: MagicMock,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Each poll reads /v1/zoo/status: a model loaded shows in the device's zoo memory, and a
    device the zoo reports later gets its sensors without a reload."""
    memory = "sensor.vigil_zoo_memory_cpu"
    recorded = load_json("zoo_status.json")
    cpu = recorded["devices"][0]
    assert float(hass.states.get(memory).state) == cpu["vram_used_mb"]
    assert hass.states.get("sensor.vigil_zoo_utilization_cpu").state == str(
        cpu["vram_utilization_percent"]
    )

    pet = {
        "name": "pet_classifier",
        "category": "animal",
        "priority": "medium",
        "device": "cpu",
        "state": "loaded",
        "estimated_bytes": 62914560,
        "measured_bytes": 62914560,
        "accounted_bytes": 62914560,
        "peak_bytes": 62914560,
        "refcount": 0,
        "pinned": True,
        "unload_pending": False,
        "idle_ttl_s": 300.0,
        "idle_s": 1.0,
        "load_seconds": 1.0,
        "loads": 1,
        "evictions": 0,
        "triggers": ["cat", "dog"],
        "description": "pets",
        "error": None,
    }
    loaded = cpu | {
        "vram_used_mb": cpu["vram_used_mb"] + 60.0,
        "zoo_used_mb": cpu["zoo_used_mb"] + 60.0,
        "loaded_models": [*cpu["loaded_models"], pet],
        "pending_loads": ["pose"],
    }
    gpu = loaded | {"device": "cuda:1", "loaded_models": [], "pending_loads": []}
    mock_vigil_client.zoo_status.return_value = ZooStatus.from_dict(
        recorded | {"devices": [loaded, gpu]}
    )
    freezer.tick(HEALTH_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()

    state = hass.states.get(memory)
    assert float(state.state) == cpu["vram_used_mb"] + 60.0
    assert "pet_classifier" in state.attributes["loaded_models"]
    assert state.attributes["pending_loads"] == ["pose"]
    assert hass.states.get("sensor.vigil_zoo_memory_cuda_1") is not None


async def test_addon_without_zoo(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    mock_vigil_client: MagicMock,
    fake_camera: FakeCamera,
) -> None:
    """An add-on without /v1/zoo/status (the client reads its 404 as None): no zoo sensors,
    everything else as usual."""
    mock_vigil_client.zoo_status.return_value = None
    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    assert hass.states.get("sensor.vigil_status").state == "healthy"
    assert not [e for e in hass.states.async_entity_ids("sensor") if "zoo" in e]


async def test_unavailable_and_recovery(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_vigil_client: MagicMock,
    freezer: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The add-on going away makes every entity unavailable (logged once) until it returns."""
    assert hass.states.get(CONNECTIVITY).state == STATE_ON
    mock_vigil_client.health.side_effect = VigilConnectionError("connection refused")
    for _ in range(3):
        freezer.tick(HEALTH_INTERVAL)
        async_fire_time_changed(hass)
        await hass.async_block_till_done()
    assert hass.states.get(RISK_SCORE).state == STATE_UNAVAILABLE
    assert hass.states.get("event.front_door_risk_event").state == STATE_UNAVAILABLE
    assert hass.states.get(CONNECTIVITY).state == STATE_OFF
    assert caplog.text.count("Error fetching") == 1

    mock_vigil_client.health.side_effect = None
    freezer.tick(HEALTH_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert hass.states.get(RISK_SCORE).state == STORED_SCORE
    assert hass.states.get(CONNECTIVITY).state == STATE_ON
    assert "recovered" in caplog.text


async def test_token_refused_later_starts_reauth(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_vigil_client: MagicMock,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A 401 on a later poll reloads the entry, which asks to re-authenticate."""
    mock_vigil_client.zoo_status.side_effect = VigilAuthenticationError("401")
    freezer.tick(HEALTH_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert init_integration.state is ConfigEntryState.SETUP_ERROR
    flows = hass.config_entries.flow.async_progress()
    assert [f["context"]["source"] for f in flows] == [SOURCE_REAUTH]


async def test_subentry_added_and_removed(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
    entity_registry: er.EntityRegistry,
) -> None:
    """A camera's device and entities come with its subentry and go with it."""
    hass.states.async_set("camera.back_yard", "idle", {"friendly_name": "Back yard"})
    subentry = ConfigSubentry(
        data={
            CONF_CAMERA_ENTITY: "camera.back_yard",
            CONF_TRIGGER_ENTITIES: [],
            CONF_MIN_INTERVAL: 0,
            CONF_LLM: False,
            CONF_NOTIFY_LEVEL: "medium",
        },
        subentry_type=SUBENTRY_CAMERA,
        title="Back yard",
        unique_id="camera.back_yard",
    )
    hass.config_entries.async_add_subentry(init_integration, subentry)
    await hass.async_block_till_done()
    assert init_integration.state is ConfigEntryState.LOADED
    assert hass.states.get("sensor.back_yard_risk_score") is not None
    device = device_registry.async_get_device_by_identifier(
        (DOMAIN, f"{INSTANCE_ID}_{subentry.subentry_id}"), init_integration.entry_id
    )
    assert device is not None

    hass.config_entries.async_remove_subentry(init_integration, subentry.subentry_id)
    await hass.async_block_till_done()
    assert init_integration.state is ConfigEntryState.LOADED
    assert device_registry.async_get(device.id) is None
    assert entity_registry.async_get("sensor.back_yard_risk_score") is None
    assert hass.states.get("sensor.front_door_risk_score") is not None


async def test_camera_device_linked_to_camera_device(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    mock_vigil_client: MagicMock,
    fake_camera: FakeCamera,
    device_registry: dr.DeviceRegistry,
    entity_registry: er.EntityRegistry,
) -> None:
    """A camera with a device of its own: the Vigil camera device is linked to it."""
    other = MockConfigEntry(domain="test")
    other.add_to_hass(hass)
    cam_device = device_registry.async_get_or_create(
        config_entry_id=other.entry_id, identifiers={("test", "cam-1")}, name="Doorbell"
    )
    entity_registry.async_update_entity("camera.front_door", device_id=cam_device.id)

    mock_config_entry.add_to_hass(hass)
    await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    device = device_registry.async_get_device_by_identifier(
        (DOMAIN, f"{INSTANCE_ID}_{CAMERA_SUBENTRY_ID}"), mock_config_entry.entry_id
    )
    assert device is not None
    assert device.via_device_id == cam_device.id


@pytest.mark.parametrize(
    ("entity_id", "camera_id"),
    [
        ("camera.front_door", "front_door"),
        ("camera.Garage-Cam 2", "garage_cam_2"),
        ("camera.___", "camera"),
        ("camera." + "x" * 80, "x" * 64),
    ],
)
def test_camera_id(entity_id: str, camera_id: str) -> None:
    """Camera entity ids map onto the add-on's camera ids ([a-z0-9_]{1,64})."""
    assert camera_id_for(entity_id) == camera_id


@pytest.mark.usefixtures("socket_enabled", "fake_camera")
async def test_addon_down_then_back_over_http_logs_once_each(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The real client against an add-on on loopback that stops for 5 polls, then returns.

    Every failed poll raises UpdateFailed with a message that names the port and the
    socket error; Home Assistant's coordinator logs the change of state, not each
    failure: one line when the add-on goes, one when it is back.
    """
    addon = StandIn()
    server = TestServer(addon.app(), host="127.0.0.1")
    await server.start_server()
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=mock_config_entry.title,
        unique_id=INSTANCE_ID,
        data=dict(mock_config_entry.data) | {CONF_PORT: server.port, CONF_API_TOKEN: TOKEN},
        subentries_data=[camera_subentry()],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert hass.states.get(CONNECTIVITY).state == STATE_ON

    port = server.port
    await server.close()
    for _ in range(5):
        freezer.tick(HEALTH_INTERVAL)
        async_fire_time_changed(hass)
        await hass.async_block_till_done(wait_background_tasks=True)
    assert hass.states.get(CONNECTIVITY).state == STATE_OFF
    assert hass.states.get(RISK_SCORE).state == STATE_UNAVAILABLE

    server = TestServer(addon.app(), host="127.0.0.1", port=port)
    await server.start_server()
    for _ in range(2):
        freezer.tick(HEALTH_INTERVAL)
        async_fire_time_changed(hass)
        await hass.async_block_till_done(wait_background_tasks=True)
    await server.close()
    assert hass.states.get(CONNECTIVITY).state == STATE_ON

    ours = [r for r in caplog.records if r.name.startswith("custom_components.vigil")]
    down = [r for r in ours if "Cannot reach the Vigil add-on" in r.getMessage()]
    back = [r for r in ours if "recovered" in r.getMessage()]
    assert len(down) == 1, [r.getMessage() for r in down]
    assert len(back) == 1
    assert down[0].created <= back[0].created
    assert await hass.config_entries.async_unload(entry.entry_id)
