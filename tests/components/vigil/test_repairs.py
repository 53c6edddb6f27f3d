"""Tests of the repair issues raised from the add-on's /health `issues`."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest
from custom_components.vigil.api import Health, VigilConnectionError
from custom_components.vigil.const import DOMAIN, HEALTH_INTERVAL
from freezegun.api import FrozenDateTimeFactory
from homeassistant.config_entries import ConfigEntryDisabler
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)
from syrupy.assertion import SnapshotAssertion

from .conftest import gpu_host, load_json


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

    mock_vigil_client.health.return_value = Health.from_dict(gpu_host(load_json("health.json")))
    await poll(hass, freezer)
    assert vigil_issues(issue_registry) == []


@pytest.mark.parametrize("health_fixture", ["health_degraded.json"])
async def test_issues_kept_over_a_reload_removed_with_the_entry(
    hass: HomeAssistant, init_integration: MockConfigEntry, issue_registry: ir.IssueRegistry
) -> None:
    """A reload keeps the issues (and what the user did with them); removal takes them."""
    before = vigil_issues(issue_registry)
    assert before
    assert await hass.config_entries.async_reload(init_integration.entry_id)
    await hass.async_block_till_done()
    assert vigil_issues(issue_registry) == before
    await hass.config_entries.async_remove(init_integration.entry_id)
    await hass.async_block_till_done()
    assert vigil_issues(issue_registry) == []


@pytest.mark.parametrize("health_fixture", ["health_degraded.json"])
async def test_issues_removed_when_disabled(
    hass: HomeAssistant, init_integration: MockConfigEntry, issue_registry: ir.IssueRegistry
) -> None:
    """Disabling the entry removes its issues."""
    assert vigil_issues(issue_registry)
    await hass.config_entries.async_set_disabled_by(
        init_integration.entry_id, ConfigEntryDisabler.USER
    )
    await hass.async_block_till_done()
    assert vigil_issues(issue_registry) == []


def cpu_only_health() -> Health:
    """The add-on's /health on a machine without a GPU (as recorded: this machine has none)."""
    health = Health.from_dict(load_json("health.json"))
    assert [i.code for i in health.issues] == ["cpu_only"]
    return health


@pytest.mark.usefixtures("fake_camera")
async def test_cpu_only_is_information_raised_once(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    mock_vigil_client: MagicMock,
    issue_registry: ir.IssueRegistry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """No GPU: one informational repair, created once, left alone once ignored, then gone.

    Neither the polls nor a reload (a camera added) raise it again, so an ignored
    notice stays ignored; it goes when the add-on stops reporting it.
    """
    mock_vigil_client.health.return_value = cpu_only_health()
    changes = async_capture_events(hass, ir.EVENT_REPAIRS_ISSUE_REGISTRY_UPDATED)
    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()

    (issue,) = vigil_issues(issue_registry)
    assert issue.issue_id == f"{mock_config_entry.entry_id}_cpu_only"
    assert (issue.translation_key, issue.severity, issue.is_fixable) == (
        "cpu_only",
        ir.IssueSeverity.WARNING,  # the lowest a repair has; its text says: information
        False,
    )
    for _ in range(3):
        await poll(hass, freezer)
    assert [(e.data["action"], e.data["issue_id"]) for e in changes] == [("create", issue.issue_id)]

    ir.async_ignore_issue(hass, DOMAIN, issue.issue_id, True)
    assert await hass.config_entries.async_reload(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    await poll(hass, freezer)
    (issue,) = vigil_issues(issue_registry)
    assert issue.dismissed_version is not None
    assert [e.data["action"] for e in changes] == ["create", "update"]  # the ignore

    mock_vigil_client.health.return_value = Health.from_dict(gpu_host(load_json("health.json")))
    await poll(hass, freezer)
    assert vigil_issues(issue_registry) == []


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        ("info", ir.IssueSeverity.WARNING),
        ("warning", ir.IssueSeverity.WARNING),
        ("error", ir.IssueSeverity.ERROR),
        ("critical", ir.IssueSeverity.CRITICAL),
        ("shrug", ir.IssueSeverity.WARNING),
    ],
)
@pytest.mark.usefixtures("fake_camera")
async def test_repair_severity_is_the_addons(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    mock_vigil_client: MagicMock,
    issue_registry: ir.IssueRegistry,
    severity: str,
    expected: ir.IssueSeverity,
) -> None:
    """The add-on's severity becomes the repair's (warning where repairs have no match)."""
    health = load_json("health.json")
    health["issues"] = [{"code": "llm_unavailable", "severity": severity, "message": "down"}]
    mock_vigil_client.health.return_value = Health.from_dict(health)
    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    (issue,) = vigil_issues(issue_registry)
    assert issue.severity is expected


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


async def test_zoo_model_failed_is_its_own_repair(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_vigil_client: MagicMock,
    issue_registry: ir.IssueRegistry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A zoo model that failed to load is a warning naming the model, with its own text."""
    health = load_json("health.json")
    health["issues"] = [
        {
            "code": "zoo_model_failed",
            "model": "pet_classifier",
            "severity": "warning",
            "message": "pet_classifier failed to load: no module; analyses go on without it",
        }
    ]
    mock_vigil_client.health.return_value = Health.from_dict(health)
    await poll(hass, freezer)
    (issue,) = vigil_issues(issue_registry)
    assert (issue.translation_key, issue.severity) == ("zoo_model_failed", ir.IssueSeverity.WARNING)
    assert issue.translation_placeholders == {
        "addon": init_integration.title,
        "subject": "pet_classifier",
        "message": health["issues"][0]["message"],
    }


@pytest.mark.parametrize("health_fixture", ["health.json"])
async def test_triton_outage_is_a_repair_until_it_answers(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_vigil_client: MagicMock,
    issue_registry: ir.IssueRegistry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """The add-on's Triton backend down: a repair with its own text, gone when it is back."""
    down = gpu_host(load_json("health.json"))
    down["status"] = "degraded"
    down["issues"] = [
        {
            "code": "triton_unavailable",
            "severity": "warning",
            "model": "vigil_detector",
            "message": "Triton server at gpu-host:8001 (grpc) is unavailable: connection refused",
        }
    ]
    mock_vigil_client.health.return_value = Health.from_dict(down)
    await poll(hass, freezer)
    (issue,) = vigil_issues(issue_registry)
    assert issue.translation_key == "triton_unavailable"
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["subject"] == "vigil_detector"
    assert "gpu-host:8001" in issue.translation_placeholders["message"]

    mock_vigil_client.health.return_value = Health.from_dict(gpu_host(load_json("health.json")))
    await poll(hass, freezer)
    assert vigil_issues(issue_registry) == []


@pytest.mark.parametrize("health_fixture", ["health.json"])
async def test_lost_ray_stage_is_a_repair_until_it_answers(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_vigil_client: MagicMock,
    issue_registry: ir.IssueRegistry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A Ray host gone (the /health recorded from the add-on with BACKEND=ray after a host's
    raylet was killed): a repair naming the stage, gone when the stage answers again."""
    down = load_json("health_stage_unavailable.json")
    mock_vigil_client.health.return_value = Health.from_dict(down)
    await poll(hass, freezer)
    (issue,) = (i for i in vigil_issues(issue_registry) if i.translation_key == "stage_unavailable")
    assert issue.severity == ir.IssueSeverity.WARNING
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["subject"] == "zoo"
    assert "zoo" in issue.translation_placeholders["message"]

    mock_vigil_client.health.return_value = Health.from_dict(load_json("health.json"))
    await poll(hass, freezer)
    keys = [i.translation_key for i in vigil_issues(issue_registry)]
    assert "stage_unavailable" not in keys


@pytest.mark.parametrize("health_fixture", ["health.json"])
async def test_unreachable_model_registry_is_a_repair_until_it_answers(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mock_vigil_client: MagicMock,
    issue_registry: ir.IssueRegistry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """The MLflow registry down while a model loaded (a hand-written fixture in the shape the
    add-on's registry test checks against its schema): a repair naming the model and the
    cached version served, without the server's password, gone once a load reaches it."""
    down = load_json("health_registry_unreachable.json")
    mock_vigil_client.health.return_value = Health.from_dict(down)
    await poll(hass, freezer)
    (issue,) = (
        i for i in vigil_issues(issue_registry) if i.translation_key == "registry_unreachable"
    )
    assert issue.severity == ir.IssueSeverity.WARNING
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["subject"] == "models:/emotion@prod"
    assert "cached version 3" in issue.translation_placeholders["message"]
    assert "vigil:***@mlflow.lan" in issue.translation_placeholders["message"]

    mock_vigil_client.health.return_value = Health.from_dict(load_json("health.json"))
    await poll(hass, freezer)
    keys = [i.translation_key for i in vigil_issues(issue_registry)]
    assert "registry_unreachable" not in keys
