"""The fixtures the integration is tested with are answers of the real add-on, in its contract.

``fixtures/openapi.json`` is the add-on's ``/openapi.json``; ``scripts/record_fixtures.py``
writes it together with the fixtures it records from the real add-on (``recorded.json`` says
which call each fixture answers), and the add-on's own tests check that the document is the one
the add-on builds now. The integration talks to the add-on over HTTP only, so this test reads
the document as a file.
"""

from __future__ import annotations

from typing import Any

import pytest
from custom_components.vigil.api import AnalysisEvent, Health, Model, Person, ZooStatus
from custom_components.vigil.const import ISSUE_CODES, RISK_LEVELS
from jsonschema import Draft202012Validator, FormatChecker

from .conftest import gpu_host, gpu_zoo, load_json

SPEC = load_json("openapi.json")
RECORDED = load_json("recorded.json")["fixtures"]
SCHEMAS = SPEC["components"]["schemas"]


def answer_schema(method: str, path: str, status: int) -> dict[str, Any]:
    """The schema the add-on publishes for that operation's answer."""
    response = SPEC["paths"][path][method.lower()]["responses"][str(status)]
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


@pytest.mark.parametrize("entry", RECORDED, ids=[e["fixture"] for e in RECORDED])
def test_fixture_is_a_valid_answer_of_the_addon(entry: dict[str, Any]) -> None:
    """Each fixture validates against the schema of the call it was recorded from."""
    schema = answer_schema(entry["method"], entry["path"], entry["status"])
    validator = Draft202012Validator(
        {**schema, "components": SPEC["components"]}, format_checker=FormatChecker()
    )
    validator.validate(load_json(entry["fixture"]))


def test_the_client_reads_every_recorded_answer() -> None:
    """The client's parsers accept the real shapes and keep the values the entities show."""
    event = AnalysisEvent.from_dict(load_json("event.json"))
    raw = load_json("event.json")
    assert (event.id, event.risk_level, event.risk_score) == (
        raw["id"],
        raw["risk_level"],
        raw["risk_score"],
    )
    assert [f.name for f in event.factors] == [f["name"] for f in raw["factors"]]
    assert event.person_count == raw["counts"]["person"]
    assert Health.from_dict(load_json("health.json")).instance_id
    degraded = Health.from_dict(load_json("health_degraded.json"))
    assert {issue.code for issue in degraded.issues} <= set(ISSUE_CODES)
    assert [Model.from_dict(m).name for m in load_json("models.json")["models"]]
    assert Person.from_dict(load_json("person.json")).name
    zoo = ZooStatus.from_dict(load_json("zoo_status.json"))
    assert [d.device for d in zoo.devices] == [
        d["device"] for d in load_json("zoo_status.json")["devices"]
    ]


@pytest.mark.parametrize(
    ("document", "method", "path"),
    [
        (gpu_host(load_json("health.json")), "GET", "/health"),
        (gpu_zoo(load_json("zoo_status.json")), "GET", "/v1/zoo/status"),
    ],
    ids=["gpu_host", "gpu_zoo"],
)
def test_gpu_documents_are_valid_answers(document: dict[str, Any], method: str, path: str) -> None:
    """The GPU host the tests make from the CPU recordings is one the contract allows."""
    schema = answer_schema(method, path, 200)
    Draft202012Validator(
        {**schema, "components": SPEC["components"]}, format_checker=FormatChecker()
    ).validate(document)


def test_risk_levels_are_the_addons() -> None:
    """The integration's levels (sensor options, event types, notify choices) are the add-on's."""
    assert list(RISK_LEVELS) == SCHEMAS["RiskLevel"]["enum"]


def test_every_issue_code_of_the_addon_has_a_repair() -> None:
    """Each /health issue code the add-on may report has its own repair text here."""
    codes = SCHEMAS["HealthIssue"]["properties"]["code"]["enum"]
    assert set(codes) <= set(ISSUE_CODES)
