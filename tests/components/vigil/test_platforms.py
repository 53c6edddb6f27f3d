"""Snapshot tests of every Vigil entity, one platform at a time."""

from __future__ import annotations

from typing import Any

import pytest
from custom_components.vigil.const import DOMAIN
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, snapshot_platform
from syrupy.assertion import SnapshotAssertion

from .conftest import CAMERA_SUBENTRY_ID, INSTANCE_ID, gpu_host, gpu_zoo, load_json


@pytest.fixture
def health_document() -> dict[str, Any]:
    """The recorded /health on a host with a GPU, so the GPU's sensors are shown too."""
    return gpu_host(load_json("health.json"))


@pytest.fixture
def zoo_document() -> dict[str, Any]:
    """The recorded zoo status with that GPU, so both devices' zoo sensors are shown."""
    return gpu_zoo(load_json("zoo_status.json"))


@pytest.mark.freeze_time("2026-11-23 04:31:00+00:00")
@pytest.mark.parametrize(
    "platforms",
    [[Platform.BINARY_SENSOR], [Platform.EVENT], [Platform.IMAGE], [Platform.SENSOR]],
    indirect=True,
)
@pytest.mark.usefixtures("fixed_tokens", "entity_registry_enabled_by_default", "init_integration")
async def test_entities(
    hass: HomeAssistant,
    snapshot: SnapshotAssertion,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
    mock_config_entry: MockConfigEntry,
) -> None:
    """Every entity, with the add-on's /health and the camera's stored event."""
    await snapshot_platform(hass, entity_registry, snapshot, mock_config_entry.entry_id)

    server = device_registry.async_get_device_by_identifier(
        (DOMAIN, INSTANCE_ID), mock_config_entry.entry_id
    )
    camera = device_registry.async_get_device_by_identifier(
        (DOMAIN, f"{INSTANCE_ID}_{CAMERA_SUBENTRY_ID}"), mock_config_entry.entry_id
    )
    assert server is not None and camera is not None
    # The add-on's device is named for what it is; where it runs is its configuration URL.
    assert server.name == "Vigil"
    assert server.configuration_url == "http://127.0.0.1:8095/health"
    assert camera.via_device_id == server.id
    assert camera.config_subentry_id == CAMERA_SUBENTRY_ID
    for entry in er.async_entries_for_config_entry(entity_registry, mock_config_entry.entry_id):
        if entry.config_subentry_id == CAMERA_SUBENTRY_ID:
            assert entry.device_id == camera.id
        else:
            assert entry.device_id == server.id


async def test_noisy_entities_disabled(
    hass: HomeAssistant, entity_registry: er.EntityRegistry, init_integration: MockConfigEntry
) -> None:
    """GPU memory used changes with every poll: disabled by default."""
    entry = entity_registry.async_get("sensor.vigil_cuda_0_memory_used")
    assert entry is not None
    assert entry.disabled_by is er.RegistryEntryDisabler.INTEGRATION
    assert hass.states.get("sensor.vigil_cuda_0_memory_budget") is not None
