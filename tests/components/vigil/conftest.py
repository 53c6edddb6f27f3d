"""Fixtures of the Vigil integration tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock, PropertyMock, patch

import pytest
from custom_components.vigil.api import AnalysisEvent, Health, Model, Person, ZooStatus
from custom_components.vigil.const import (
    CONF_CAMERA_ENTITY,
    CONF_LLM,
    CONF_MIN_INTERVAL,
    CONF_NOTIFY_LEVEL,
    CONF_TRIGGER_ENTITIES,
    DOMAIN,
    SUBENTRY_CAMERA,
)
from homeassistant.components.camera import Camera
from homeassistant.config_entries import ConfigSubentryData
from homeassistant.const import CONF_API_TOKEN, CONF_HOST, CONF_PORT, CONF_SSL
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    setup_test_component_platform,
)
from pytest_homeassistant_custom_component.syrupy import HomeAssistantSnapshotExtension
from syrupy.assertion import SnapshotAssertion
from yarl import URL

FIXTURES = Path(__file__).parent / "fixtures"
INSTANCE_ID = "9f0c2b7e5d1a4c3b8e6f0a1d2c3b4a59"
CAMERA_SUBENTRY_ID = "01JDCAMERAFRONTDOOR0000000"
CAMERA_ENTITY = "camera.front_door"
TRIGGER_ENTITY = "binary_sensor.front_motion"


EVENT_ENRICHMENTS: dict[str, Any] = {"postures": ["standing"], "vehicle_type": "bus"}
"""What event.json's enrichments show, flat (event entity, bus event, analyze response)."""


def load_json(name: str) -> Any:
    """Load a JSON fixture."""
    return json.loads((FIXTURES / name).read_text())


def load_bytes(name: str) -> bytes:
    """Load a binary fixture."""
    return (FIXTURES / name).read_bytes()


class FakeCamera(Camera):
    """A camera serving a fixed JPEG."""

    _attr_name = "Front door"
    _attr_unique_id = "test_front_door"

    def __init__(self, image: bytes) -> None:
        """Initialize the camera."""
        super().__init__()
        self.image = image
        self.content_type = "image/jpeg"
        self.fail = False

    async def async_camera_image(
        self, width: int | None = None, height: int | None = None
    ) -> bytes | None:
        """Return the image (or nothing, to simulate a broken camera)."""
        return None if self.fail else self.image


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Use Home Assistant's snapshot serializer (registry ids become ANY)."""
    return snapshot.use_extension(HomeAssistantSnapshotExtension)


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load custom_components/vigil."""


def camera_subentry(
    *,
    subentry_id: str = CAMERA_SUBENTRY_ID,
    camera: str = CAMERA_ENTITY,
    title: str = "Front door",
    triggers: list[str] | None = None,
    min_interval: int = 10,
    llm: bool = True,
    notify_level: str = "high",
) -> ConfigSubentryData:
    """Return the data of one camera subentry."""
    return ConfigSubentryData(
        data={
            CONF_CAMERA_ENTITY: camera,
            CONF_TRIGGER_ENTITIES: [TRIGGER_ENTITY] if triggers is None else triggers,
            CONF_MIN_INTERVAL: min_interval,
            CONF_LLM: llm,
            CONF_NOTIFY_LEVEL: notify_level,
        },
        subentry_id=subentry_id,
        subentry_type=SUBENTRY_CAMERA,
        title=title,
        unique_id=camera,
    )


@pytest.fixture
def subentries() -> list[ConfigSubentryData]:
    """Return the entry's camera subentries (override in a test module to change)."""
    return [camera_subentry()]


ENTRY_ID = "01JVIGILTESTENTRY000000000"
"""Fixed, so that what names the entry (repair issue ids in diagnostics) is the same each run."""


@pytest.fixture
def mock_config_entry(subentries: list[ConfigSubentryData]) -> MockConfigEntry:
    """Return the default mocked config entry: one add-on, one camera."""
    return MockConfigEntry(
        title="Vigil (127.0.0.1)",
        domain=DOMAIN,
        entry_id=ENTRY_ID,
        data={
            CONF_HOST: "127.0.0.1",
            CONF_PORT: 8095,
            CONF_API_TOKEN: "s3cr3t-token",
            CONF_SSL: False,
        },
        unique_id=INSTANCE_ID,
        subentries_data=subentries,
    )


@pytest.fixture
def mock_setup_entry() -> Generator[AsyncMock]:
    """Do not set the entry up (config flow tests)."""
    with patch("custom_components.vigil.async_setup_entry", return_value=True) as mock:
        yield mock


@pytest.fixture
def health_fixture() -> str:
    """Return the /health fixture to serve."""
    return "health.json"


def gpu_host(health: dict[str, Any]) -> dict[str, Any]:
    """Return a recorded /health answer as a host with one CUDA GPU would give it.

    The fixtures are recorded on a CPU-only machine; this adds the device entry the add-on
    reports for a GPU (test_contract.py checks it against the add-on's contract).
    """
    gpu = {
        "id": "cuda:0",
        "kind": "cuda",
        "name": "NVIDIA GeForce RTX 3090",
        "present": True,
        "budget_bytes": 23622320128,
        "used_bytes": GPU_LLM_BYTES,
        "total_bytes": 25769803776,
        "services": ["llm"],
    }
    issues = [i for i in health["issues"] if i["code"] != "cpu_only"]
    return health | {"cuda_available": True, "devices": [*health["devices"], gpu], "issues": issues}


GPU_LLM_BYTES = 1800000000
"""What gpu_host's GPU holds: the LLM server, a co-tenant of the zoo on that GPU."""


def gpu_zoo(zoo: dict[str, Any]) -> dict[str, Any]:
    """Return a recorded /v1/zoo/status answer as gpu_host's add-on would give it.

    The GPU holds the LLM server (a co-tenant) and no zoo model yet; its budget is
    gpu_host's.
    """
    budget_mb = round(23622320128 / 2**20, 1)
    used_mb = round(GPU_LLM_BYTES / 2**20, 1)
    gpu = {
        "device": "cuda:0",
        "vram_budget_mb": budget_mb,
        "vram_used_mb": used_mb,
        "vram_available_mb": round(budget_mb - used_mb, 1),
        "vram_utilization_percent": round(100 * used_mb / budget_mb, 1),
        "zoo_used_mb": 0.0,
        "cotenants_mb": used_mb,
        "loaded_models": [],
        "registered_models": [],
        "pending_loads": [],
        "overruns": 0,
    }
    return zoo | {"devices": [*zoo["devices"], gpu]}


@pytest.fixture
def health_document(health_fixture: str) -> dict[str, Any]:
    """Return the /health answer to serve (override for another host, e.g. gpu_host)."""
    result: dict[str, Any] = load_json(health_fixture)
    return result


@pytest.fixture
def zoo_document() -> dict[str, Any]:
    """Return the /v1/zoo/status answer to serve (override for another host, e.g. gpu_zoo)."""
    result: dict[str, Any] = load_json("zoo_status.json")
    return result


async def idle_stream(after: int | None = None) -> AsyncIterator[tuple[int, AnalysisEvent | None]]:
    """The event stream of an add-on on which nothing happens (until the test ends)."""
    await asyncio.Event().wait()
    yield 0, None  # never reached: makes this an async generator like the client's


@pytest.fixture
def mock_vigil_client(
    health_document: dict[str, Any], zoo_document: dict[str, Any]
) -> Generator[MagicMock]:
    """Return an autospecced add-on client fed from the JSON fixtures."""
    with (
        patch("custom_components.vigil.VigilClient", autospec=True) as client_cls,
        patch("custom_components.vigil.config_flow.VigilClient", new=client_cls),
    ):
        client = client_cls.return_value
        client.base_url = URL("http://127.0.0.1:8095")
        client.health.return_value = Health.from_dict(health_document)
        client.models.return_value = [
            Model.from_dict(m) for m in load_json("models.json")["models"]
        ]
        client.verify_auth.return_value = None
        client.zoo_status.return_value = ZooStatus.from_dict(zoo_document)
        client.analyze.return_value = AnalysisEvent.from_dict(load_json("event.json"))
        client.latest_event.return_value = AnalysisEvent.from_dict(
            load_json("events.json")["events"][0]
        )
        client.snapshot.return_value = b"\xff\xd8annotated-snapshot\xff\xd9"
        client.stream_events = idle_stream
        client.enroll_person.return_value = Person.from_dict(load_json("person.json"))
        client.load_model.return_value = Model.from_dict(load_json("model_loaded.json"))
        client.unload_model.return_value = Model.from_dict(
            load_json("model_loaded.json")
            | {"state": "unloaded", "loaded": False, "vram_bytes": 0, "accounted_bytes": 0}
        )
        yield client


@pytest.fixture
async def fake_camera(hass: HomeAssistant) -> FakeCamera:
    """Set up camera.front_door serving bus.jpg, and the motion trigger (off)."""
    cam = FakeCamera(load_bytes("bus.jpg"))
    setup_test_component_platform(hass, "camera", [cam])
    assert await async_setup_component(hass, "camera", {"camera": {"platform": "test"}})
    await hass.async_block_till_done()
    hass.states.async_set(TRIGGER_ENTITY, "off", {"device_class": "motion"})
    return cam


@pytest.fixture
def platforms(request: pytest.FixtureRequest) -> list[str] | None:
    """Return the platforms to set up (None: all; parametrize indirectly to limit)."""
    return getattr(request, "param", None)


@pytest.fixture
def fixed_tokens() -> Generator[None]:
    """Make image/camera access tokens stable (they show in entity states)."""
    with patch("homeassistant.components.image._RND.getrandbits", return_value=0xC0FFEE):
        yield


@pytest.fixture
async def init_integration(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    mock_vigil_client: MagicMock,
    fake_camera: FakeCamera,
    platforms: list[str] | None,
) -> MockConfigEntry:
    """Set up the Vigil integration with the mocked client."""
    mock_config_entry.add_to_hass(hass)
    if platforms is None:
        assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    else:
        with patch("custom_components.vigil.PLATFORMS", platforms):
            assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    return mock_config_entry


@pytest.fixture
def entity_registry_enabled_by_default() -> Generator[None]:
    """Enable the entities that are disabled by default."""
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        return_value=True,
        new_callable=PropertyMock,
    ):
        yield
