"""Tests of the Vigil diagnostics."""

from __future__ import annotations

import json

from custom_components.vigil.api import AnalysisEvent
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
from syrupy.assertion import SnapshotAssertion

from .conftest import load_json

NAME = "Alice Example"


async def test_diagnostics(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    init_integration: MockConfigEntry,
    snapshot: SnapshotAssertion,
) -> None:
    """Diagnostics hold the health and the last events; the token is redacted."""
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, init_integration)
    assert diagnostics["entry"]["data"]["api_token"] == "**REDACTED**"
    assert "s3cr3t-token" not in str(diagnostics)
    assert diagnostics == snapshot


async def test_diagnostics_redact_enrolled_names(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    init_integration: MockConfigEntry,
) -> None:
    """An enrolled person's name appears nowhere in the diagnostics, nor any part of it.

    The add-on writes the name into the re-ID match and into free text (the identity
    factor, the summary, the model's reasoning); all of it comes out redacted.
    """
    event = load_json("event.json") | {
        "summary": f"{NAME} is at the front door with an unknown person.",
        "reasoning": f"Alice (enrolled) and one unknown person; {NAME.upper()} is known.",
        "factors": [
            {"name": "known_person", "points": -10, "detail": f"also enrolled: {NAME}"},
            {"name": "night", "points": 20, "detail": "04:30 local time"},
        ],
        "reid": [
            {"person_id": "p1", "person_name": NAME, "similarity": 0.83, "seen": []},
            {"person_id": None, "person_name": None, "similarity": 0.0, "seen": []},
        ],
    }
    camera = next(iter(init_integration.runtime_data.cameras.values()))
    camera.async_set_updated_data(AnalysisEvent.from_dict(event))
    assert await async_setup_component(hass, "diagnostics", {})

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, init_integration)
    text = json.dumps(diagnostics).lower()
    for part in NAME.lower().split():
        assert part not in text
    last = diagnostics["cameras"]["Front door"]["last_event"]
    assert last["reid"][0]["person_name"] == "**REDACTED**"
    # What is not about people stays: the factor names and points, the level, the counts.
    assert [(f["name"], f["points"]) for f in last["factors"]] == [
        ("known_person", -10),
        ("night", 20),
    ]
    assert last["risk_level"] == event["risk_level"]


async def test_diagnostics_redact_enrichments_about_people(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    init_integration: MockConfigEntry,
) -> None:
    """A plate's text, a face's age and gender and a body's appearance vector are redacted;
    what singles out nobody (threats, postures, the zoo's memory) stays."""
    plate, vector = "XY 987 ZW", [0.125, -0.5, 0.75]
    event = load_json("event.json") | {
        "enrichments": {
            "results": {
                "plate_reader": {"plates": [{"text": plate, "confidence": 0.8}]},
                "demographics": {
                    "faces": [{"age_range": "25-32", "age_estimate": 27.5, "gender": "female"}]
                },
                "person_reid": {"embeddings": [{"vector": vector, "bbox": [1, 2, 3, 4]}]},
                "threat_detector": {"threats": [{"class_name": "knife", "confidence": 0.9}]},
                "pose": {"persons": [{"posture": "crouching"}]},
            },
            "skipped": {},
        }
    }
    camera = next(iter(init_integration.runtime_data.cameras.values()))
    camera.async_set_updated_data(AnalysisEvent.from_dict(event))
    assert await async_setup_component(hass, "diagnostics", {})

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, init_integration)
    text = json.dumps(diagnostics)
    for secret in (plate, "25-32", "female", "0.125", "27.5"):
        assert secret not in text
    results = diagnostics["cameras"]["Front door"]["last_event"]["enrichments"]["results"]
    assert results["plate_reader"]["plates"][0] == {"text": "**REDACTED**", "confidence": 0.8}
    assert results["person_reid"]["embeddings"][0]["vector"] == "**REDACTED**"
    assert results["threat_detector"]["threats"][0]["class_name"] == "knife"
    assert results["pose"]["persons"][0]["posture"] == "crouching"
    assert diagnostics["server"]["zoo"] == load_json("zoo_status.json")
