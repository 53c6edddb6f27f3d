"""The HTTP contract: what the real add-on answers is what its /openapi.json publishes.

Every operation of the served document is called on the real app (real detector, real face
re-ID, real SQLite) and each answer is validated against the schema the document names for that
operation and status. The integration's fixtures, recorded from the real add-on by
``scripts/record_fixtures.py``, and the committed copy of the document are checked against what
the app builds now, so a change of shape on either side fails here first.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from PIL import Image

from addon_server.api import ALL_ROUTES
from addon_server.api.openapi import build_spec
from addon_server.app import create_app
from addon_server.config import ConfigError, parse
from addon_server.reasoning.levels import BANDS, LEVEL_RANK, RiskLevel, level_for
from addon_server.reasoning.prompt import SYSTEM_PROMPT
from tests.addon_server.conftest import CountingDetector

FIXTURES = Path(__file__).resolve().parents[1] / "components" / "vigil" / "fixtures"
TOKEN = "contract-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JPEG = {**AUTH, "Content-Type": "image/jpeg"}


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for ``schema`` whose ``$ref``s resolve inside the OpenAPI document."""
    return Draft202012Validator(
        {**schema, "components": spec["components"]}, format_checker=FormatChecker()
    )


def response_schema(spec: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    responses = spec["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} does not document {status}"
    content = responses[str(status)]["content"]
    assert "application/json" in content, f"{method} {path} {status} is not JSON"
    schema: dict[str, Any] = content["application/json"]["schema"]
    return schema


class Contract:
    """Calls the app, checks each answer against the served document, records what ran."""

    def __init__(self, client: Any, spec: dict[str, Any]) -> None:
        self.client = client
        self.spec = spec
        self.called: set[tuple[str, str]] = set()

    async def call(
        self, method: str, path: str, status: int, *, route: str | None = None, **kwargs: Any
    ) -> Any:
        kwargs.setdefault("headers", AUTH)
        resp = await self.client.request(method, path, **kwargs)
        assert resp.status == status, await resp.text()
        route = route or path.split("?", maxsplit=1)[0]
        self.called.add((method.lower(), route))
        if resp.content_type != "application/json":
            documented = self.spec["paths"][route][method.lower()]["responses"][str(status)]
            assert resp.content_type in documented["content"]
            return await resp.read()
        body = await resp.json()
        validator(self.spec, response_schema(self.spec, method, route, status)).validate(body)
        return body


LIGHT_STATUS = {
    "/v1/pose-analyze": 200,
    "/v1/threat-detect": 200,
    "/v1/reid-embed": 200,
    "/v1/pet-classify": 200,
    "/v1/depth-estimate": 409,  # its weights are the user's to supply: not installed here
}


@pytest.fixture
async def contract(aiohttp_client, make_settings, counting_detector: CountingDetector) -> Contract:
    # A generous zoo deadline: the light endpoints' 200s must not depend on how fast this
    # machine loads the models the earlier analyses triggered (one loader per device).
    settings = make_settings(
        {
            "detector": {"warmup": False},
            "server": {"api_token": TOKEN},
            "zoo": {"deadline_s": 300},
        }
    )
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    spec = await (await client.get("/openapi.json", headers=AUTH)).json()
    return Contract(client, spec)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


async def test_every_operation_answers_what_the_document_says(
    contract: Contract, bus_jpg: bytes, zidane_jpg: bytes
) -> None:
    c = contract
    health = await c.call("GET", "/health", 200, headers={})
    assert health["status"] == "healthy"
    await c.call("GET", "/openapi.json", 200)
    models = await c.call("GET", "/v1/models", 200)
    detector, embedder = (m["name"] for m in models["models"][:2])
    assert {m["kind"] for m in models["models"][2:]} == {"zoo"}
    status = await c.call("GET", "/v1/zoo/status", 200)
    assert status["devices"][0]["registered_models"]
    await c.call("GET", "/v1/models", 401, headers={})
    await c.call("GET", "/metrics", 200)

    detected = await c.call("POST", "/v1/detect", 200, data=bus_jpg, headers=JPEG)
    assert detected["detections"]
    await c.call("POST", "/v1/detect", 400, data=b"", headers=JPEG)
    await c.call("POST", "/v1/detect?confidence=2", 400, data=bus_jpg, headers=JPEG)

    night = "2026-11-23T04:30:00+00:00"
    bus = await c.call(
        "POST",
        f"/v1/analyze?camera=front_door&llm=false&timestamp={night.replace('+', '%2B')}",
        200,
        data=bus_jpg,
        headers=JPEG,
    )
    assert bus["factors"] and bus["counts"]["person"] >= 3
    form = aiohttp.FormData()
    form.add_field("image", zidane_jpg, filename="z.jpg", content_type="image/jpeg")
    form.add_field("camera", "patio")
    form.add_field("llm", "false")
    stranger = await c.call("POST", "/v1/analyze", 200, data=form)
    assert stranger["reid"], "zidane.jpg has faces for the re-ID part of the event"
    await c.call("POST", "/v1/analyze?camera=Front%20Door", 400, data=bus_jpg, headers=JPEG)

    listed = await c.call("GET", "/v1/events?camera=front_door&min_level=low&limit=5", 200)
    assert [e["id"] for e in listed["events"]] == [bus["id"]]
    await c.call("GET", "/v1/events?min_level=extreme", 400)
    event_route = "/v1/events/{event_id}"
    stored = await c.call("GET", f"/v1/events/{bus['id']}", 200, route=event_route)
    assert {k: v for k, v in stored.items() if k not in ("timings_ms", "revisions")} == {
        k: v for k, v in bus.items() if k != "timings_ms"
    }
    assert [r["revision"] for r in stored["revisions"]] == [1]  # rules only: one revision
    await c.call("GET", "/v1/events/0123456789abcdef01234567", 404, route=event_route)
    feedback_route = "/v1/events/{event_id}/feedback"
    marked = await c.call(
        "POST",
        f"/v1/events/{bus['id']}/feedback",
        200,
        route=feedback_route,
        json={"verdict": "false_alarm", "note": "the school bus"},
    )
    assert marked["feedback"]["verdict"] == "false_alarm"
    await c.call("POST", f"/v1/events/{bus['id']}/feedback", 400, route=feedback_route, json={})
    await c.call(
        "POST",
        "/v1/events/0123456789abcdef01234567/feedback",
        404,
        route=feedback_route,
        json={"verdict": "confirmed"},
    )
    withdrawn = await c.call(
        "DELETE", f"/v1/events/{bus['id']}/feedback", 200, route=feedback_route
    )
    assert "feedback" not in withdrawn
    await c.call(
        "DELETE", "/v1/events/0123456789abcdef01234567/feedback", 404, route=feedback_route
    )
    snapshot_route = "/v1/events/{event_id}/snapshot.jpg"
    jpeg = await c.call("GET", bus["snapshot_url"], 200, route=snapshot_route)
    assert jpeg.startswith(b"\xff\xd8")
    await c.call(
        "GET", "/v1/events/0123456789abcdef01234567/snapshot.jpg", 404, route=snapshot_route
    )

    enrol = aiohttp.FormData()
    enrol.add_field("name", "Zinedine")
    enrol.add_field("image", zidane_jpg, filename="z.jpg", content_type="image/jpeg")
    person = await c.call("POST", "/v1/people", 201, data=enrol)
    people = await c.call("GET", "/v1/people", 200)
    assert people["people"] == [person]
    again = aiohttp.FormData()
    again.add_field("image", zidane_jpg, filename="z.jpg", content_type="image/jpeg")
    again.add_field("camera", "patio")
    again.add_field("llm", "false")
    known = await c.call("POST", "/v1/analyze", 200, data=again)
    assert "Zinedine" in [face["person_name"] for face in known["reid"]]
    person_route = "/v1/people/{person_id}"
    await c.call("DELETE", f"/v1/people/{person['id']}", 200, route=person_route)
    await c.call("DELETE", f"/v1/people/{person['id']}", 404, route=person_route)

    unload, load = "/v1/models/{name}/unload", "/v1/models/{name}/load"
    unloaded = await c.call("POST", f"/v1/models/{embedder}/unload", 200, route=unload)
    assert unloaded["loaded"] is False
    loaded = await c.call("POST", f"/v1/models/{embedder}/load", 200, route=load)
    assert loaded["loaded"] is True
    await c.call("POST", f"/v1/models/{detector}/unload", 409, route=unload)
    await c.call("POST", "/v1/models/nope/load", 404, route=load)
    # The contract's detector is a file, not a registry model: nothing to roll.
    await c.call("POST", "/v1/models/detector/reload", 409)

    enriched = await c.call("POST", "/v1/enrich", 200, data=bus_jpg, headers=JPEG)
    assert enriched["detections"]
    assert set(enriched["enrichments"]["results"]) | set(enriched["enrichments"]["skipped"])
    await c.call("POST", "/v1/enrich?models=nope", 404, data=bus_jpg, headers=JPEG)
    await c.call("POST", "/v1/enrich?detections=%5B1%5D", 400, data=bus_jpg, headers=JPEG)
    for path, status_code in LIGHT_STATUS.items():
        await c.call("POST", path, status_code, data=bus_jpg, headers=JPEG)

    assignment = await c.call("GET", "/v1/gpu-assignment", 200)
    assert (assignment["host_gpus"], assignment["restart_required"]) == ([], False)
    no_gpu = {"devices": {"cuda:0": {"services": ["detector"]}}}  # this host has no GPU
    await c.call("PUT", "/v1/gpu-assignment", 400, json=no_gpu)

    # The stream never ends (test_two_phase.py reads it); its documented error is called here.
    await c.call("GET", "/v1/events/stream?after=soon", 400)

    documented = {(method, path) for path, ops in c.spec["paths"].items() for method in ops}
    assert c.called == documented, "every published operation is called here"


async def test_degraded_health_matches_the_contract(
    aiohttp_client, make_settings, counting_detector: CountingDetector, tmp_path: Path
) -> None:
    """A fallback placement, a missing model and an unreachable LLM: each issue is typed."""
    settings = make_settings(
        {
            "devices": {"cuda:0": {"services": ["detector"]}},
            "reid": {"models_dir": str(tmp_path / "no-models")},
            "llm": {"mode": "external", "url": "http://127.0.0.1:9", "connect_timeout_s": 1},
        }
    )
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    spec = await (await client.get("/openapi.json")).json()
    health = await (await client.get("/health")).json()
    validator(spec, response_schema(spec, "GET", "/health", 200)).validate(health)
    assert health["status"] == "degraded"
    assert {i["code"] for i in health["issues"]} == {
        "service_fallback",
        "model_not_installed",
        "llm_unavailable",
    }


def test_closed_objects_catch_a_renamed_or_added_field() -> None:
    """The contract is strict where the add-on owns the shape: drift is an error, not a shrug."""
    spec = build_spec(ALL_ROUTES)
    event = json.loads((FIXTURES / "event.json").read_text())
    check = validator(spec, {"$ref": "#/components/schemas/Event"})
    check.validate(event)
    with pytest.raises(ValidationError, match="additional"):
        check.validate(event | {"severity": "high"})
    renamed = dict(event)
    renamed["level"] = renamed.pop("risk_level")
    with pytest.raises(ValidationError):
        check.validate(renamed)
    with pytest.raises(ValidationError):
        check.validate(event | {"risk_level": "extreme"})


def test_recorded_fixtures_match_the_contract() -> None:
    """Each fixture of the integration's tests is a recorded answer that still validates."""
    spec = build_spec(ALL_ROUTES)
    manifest = json.loads((FIXTURES / "recorded.json").read_text())
    for entry in manifest["fixtures"]:
        body = json.loads((FIXTURES / entry["fixture"]).read_text())
        schema = response_schema(spec, entry["method"], entry["path"], entry["status"])
        validator(spec, schema).validate(body)
    recorded = {entry["fixture"] for entry in manifest["fixtures"]}
    on_disk = {p.name for p in FIXTURES.glob("*.json")} - {"openapi.json", "recorded.json"}
    assert on_disk == recorded, "every JSON fixture is recorded, none written by hand"


def test_committed_openapi_document_is_the_one_the_app_builds() -> None:
    """tests/components/vigil/fixtures/openapi.json is what the integration's tests read."""
    committed = json.loads((FIXTURES / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(build_spec(ALL_ROUTES))), (
        "the contract changed: run scripts/record_fixtures.py and commit the fixtures"
    )


async def test_camera_ids_are_whole_strings_everywhere(contract: Contract) -> None:
    """One camera-id rule: a trailing newline is not a camera id, for the config or the API.

    (``CAMERA_ID.match`` accepted ``"front_door\\n"``: ``$`` also matches before a final newline.)
    """
    with pytest.raises(ConfigError, match="camera ids are"):
        parse({"analysis": {"cameras": ["front_door\n"]}}, environ={})
    resp = await contract.client.get("/v1/events?camera=front_door%0A", headers=AUTH)
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["code"] == "bad_parameter"


def test_levels_have_one_definition() -> None:
    """The store's ranks, the bands, the published enum and the LLM prompt agree."""
    assert list(LEVEL_RANK) == [str(level) for level in RiskLevel]
    assert [level for _, level in BANDS] == list(RiskLevel)
    spec = build_spec(ALL_ROUTES)
    assert spec["components"]["schemas"]["RiskLevel"]["enum"] == list(LEVEL_RANK)
    quoted = re.findall(r'"(\w+)" \((\d+)-(\d+)\)', SYSTEM_PROMPT)
    assert [name for name, _, _ in quoted] == list(LEVEL_RANK)
    for name, low, high in quoted:
        assert level_for(int(low)) == level_for(int(high)) == RiskLevel(name)
