"""Tests of the repair issues raised from the add-on's /health `issues`."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest
from custom_components.vigil.api import Health, VigilConnectionError
from custom_components.vigil.const import DOMAIN, HEALTH_INTERVAL
from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed
from syrupy.assertion import SnapshotAssertion

from .conftest import load_json


def vigil_issues(issue_registry: ir.IssueRegistry) -> list[ir.IssueEntry]:
    """Return the Vigil repair issues, by id."""
    return sorted(
        (i for (domain, _), i in issue_registry.issues.items() if domain == DOMAIN),
        key=lambda i: i.issue_id,
    )


async def poll(hass: HomeAssistant, freezer: FrozenDateTimeFactory) -> None:
    """Let the server coordinator poll once."""
    freezer.tick(HEALTH_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()


@pytest.mark.parametrize("health_fixture", ["health_degraded.json"])
async def test_issues_follow_health(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_vigil_client: MagicMock,
    issue_registry: ir.IssueRegistry,
    freezer: FrozenDateTimeFactory,
    snapshot: SnapshotAssertion,
) -> None:
    """A fallback and a missing model become repair issues, and go when the cause goes."""
    issues = vigil_issues(issue_registry)
    assert [(i.translation_key, i.translation_placeholders) for i in issues] == snapshot

    # The add-on being unreachable says nothing about the causes: the issues stay.
    mock_vigil_client.health.side_effect = VigilConnectionError("down")
    await poll(hass, freezer)
    assert len(vigil_issues(issue_registry)) == 3

    mock_vigil_client.health.side_effect = None
    degraded = load_json("health_degraded.json")
    degraded["issues"] = degraded["issues"][1:2]
    mock_vigil_client.health.return_value = Health.from_dict(degraded)
    await poll(hass, freezer)
    assert [i.translation_key for i in vigil_issues(issue_registry)] == ["model_not_installed"]

    mock_vigil_client.health.return_value = Health.from_dict(load_json("health.json"))
    await poll(hass, freezer)
    assert vigil_issues(issue_registry) == []


@pytest.mark.parametrize("health_fixture", ["health_degraded.json"])
async def test_issues_removed_on_unload(
    hass: HomeAssistant, init_integration: MockConfigEntry, issue_registry: ir.IssueRegistry
) -> None:
    """Unloading the entry removes its issues."""
    assert vigil_issues(issue_registry)
    await hass.config_entries.async_unload(init_integration.entry_id)
    await hass.async_block_till_done()
    assert vigil_issues(issue_registry) == []


async def test_unknown_issue_code_gets_the_generic_repair(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_vigil_client: MagicMock,
    issue_registry: ir.IssueRegistry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A code a newer add-on reports and this integration has no text for still shows up.

    (The recorded add-on reports only codes the integration knows, so one is added here.)
    """
    health = load_json("health.json")
    health["issues"] = [{"code": "gpu_overheating", "message": "cuda:0 runs at 95 °C"}]
    mock_vigil_client.health.return_value = Health.from_dict(health)
    await poll(hass, freezer)
    (issue,) = vigil_issues(issue_registry)
    assert issue.translation_key == "addon_issue"
    assert issue.translation_placeholders["message"] == "cuda:0 runs at 95 °C"
