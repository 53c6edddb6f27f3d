"""Tests of the add-on client over real HTTP, against a stand-in add-on on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from custom_components.vigil.api import (
    AnalysisEvent,
    DetectResult,
    Enrichments,
    Health,
    ImageUpload,
    VigilAuthenticationError,
    VigilClient,
    VigilConnectionError,
    VigilModelNotInstalledError,
    VigilNotFoundError,
    VigilResponseError,
    ZooStatus,
)

from .conftest import load_json

TOKEN = "t0ken"


def error(status: int, code: str, message: str) -> web.Response:
    """Return an error in the add-on's shape."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class StandIn:
    """A stand-in add-on: records requests and answers from the fixtures."""

    def __init__(self) -> None:
        """Initialize."""
        self.requests: list[dict[str, Any]] = []

    @web.middleware
    async def auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Check the bearer token, except on /health."""
        if request.path != "/health" and request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return error(401, "unauthorized", "missing or wrong token")
        return await handler(request)

    def app(self) -> web.Application:
        """Build the app."""
        app = web.Application(middlewares=[self.auth])
        app.router.add_get("/health", self.json("health.json"))
        app.router.add_get("/v1/models", self.json("models.json"))
        app.router.add_get("/v1/zoo/status", self.json("zoo_status.json"))
        app.router.add_post("/v1/analyze", self.analyze)
        app.router.add_post("/v1/detect", self.detect)
        app.router.add_get("/v1/events", self.events)
        app.router.add_get("/v1/events/{id}/snapshot.jpg", self.snapshot)
        app.router.add_post("/v1/people", self.people)
        app.router.add_post("/v1/events/{id}/feedback", self.feedback)
        app.router.add_post("/v1/models/{name}/{action}", self.model)
        app.router.add_get("/broken", self.broken)
        return app

    @staticmethod
    def json(fixture: str) -> Any:
        """Return a handler answering a fixture."""

        async def handler(request: web.Request) -> web.Response:
            return web.json_response(load_json(fixture))

        return handler

    async def broken(self, request: web.Request) -> web.Response:
        """Answer something that is not JSON."""
        return web.Response(text="not json")

    async def analyze(self, request: web.Request) -> web.Response:
        """Record the multipart fields; answer the event fixture."""
        form = await request.post()
        image = form["image"]
        self.requests.append(
            {
                "camera": form["camera"],
                "llm": form.get("llm"),
                "timestamp": form.get("timestamp"),
                "zone": form.get("zone"),
                "notify_level": form.get("notify_level"),
                "image": image.file.read(),  # type: ignore[union-attr]
                "content_type": image.content_type,  # type: ignore[union-attr]
            }
        )
        return web.json_response(load_json("event.json"))

    async def detect(self, request: web.Request) -> web.Response:
        """Answer a detection."""
        assert request.content_type == "image/png"
        return web.json_response(
            {
                "detections": load_json("event.json")["detections"],
                "image": {"width": 810, "height": 1080},
                "inference_time_ms": 41.2,
                "model": "yolov3-tiny-coco",
            }
        )

    async def events(self, request: web.Request) -> web.Response:
        """Answer the stored events of a camera."""
        if request.query["camera"] == "empty":
            return web.json_response({"events": []})
        assert request.query["limit"] == "1"
        return web.json_response(load_json("events.json"))

    async def snapshot(self, request: web.Request) -> web.Response:
        """Answer a JPEG, or 404 for an unknown event."""
        if request.match_info["id"] == "nope":
            return error(404, "unknown_event", "no such event")
        return web.Response(body=b"\xff\xd8jpeg", content_type="image/jpeg")

    async def feedback(self, request: web.Request) -> web.Response:
        """Record the JSON body; answer the event with its feedback, 404 for an unknown id."""
        if request.match_info["id"] == "nope":
            return error(404, "unknown_event", "no event 'nope'")
        body = await request.json()
        self.requests.append({"feedback": body, "content_type": request.content_type})
        event = load_json("event.json")
        if body["verdict"] != "none":
            event["feedback"] = {"verdict": body["verdict"], "note": body.get("note"), "ts": 1.0}
        return web.json_response(event)

    async def people(self, request: web.Request) -> web.Response:
        """Answer an enrolment with as many embeddings as images."""
        form = await request.post()
        return web.json_response(
            {"id": "p1", "name": form["name"], "embeddings": len(form.getall("image"))}
        )

    async def model(self, request: web.Request) -> web.Response:
        """Answer model load/unload, with the add-on's errors for two names."""
        name = request.match_info["name"]
        if name == "missing":
            return error(404, "unknown_model", "no model named missing")
        if name == "uninstalled":
            return error(409, "model_not_installed", "files missing")
        if name == "crash":
            return web.Response(status=500, text="<html>oops</html>")
        if name == "busy":
            return error(503, "zoo_busy", "deadline: the models in use fill the budget")
        loaded = request.match_info["action"] == "load"
        self.requests.append({"model": name, "query": dict(request.query)})
        answer = load_json("model_loaded.json") | {"name": name, "loaded": loaded}
        if "pin" in request.query:
            answer["pinned"] = request.query["pin"] == "true"
        return web.json_response(answer)


@pytest.fixture
async def stand_in(socket_enabled: None) -> AsyncGenerator[tuple[StandIn, TestServer]]:
    """Serve the stand-in add-on on 127.0.0.1."""
    addon = StandIn()
    server = TestServer(addon.app(), host="127.0.0.1")
    await server.start_server()
    yield addon, server
    await server.close()


@pytest.fixture
async def session() -> AsyncGenerator[ClientSession]:
    """A plain aiohttp session."""
    async with ClientSession() as s:
        yield s


def client_for(
    session: ClientSession, server: TestServer, token: str | None = TOKEN
) -> VigilClient:
    """Return a client for the stand-in, with the client's own (generous) timeouts."""
    return VigilClient(session, host="127.0.0.1", port=server.port, token=token)


async def test_routes(stand_in: tuple[StandIn, TestServer], session: ClientSession) -> None:
    """Every route parses into its dataclass."""
    addon, server = stand_in
    client = client_for(session, server)
    health = await client.health()
    assert isinstance(health, Health)
    assert health.instance_id == "9f0c2b7e5d1a4c3b8e6f0a1d2c3b4a59"
    assert [(d.id, d.kind) for d in health.devices] == [("cpu", "cpu")]
    assert health.gpus == ()
    # Recorded after the analyses: the detector, the face embedder and the zoo models they ran.
    assert health.models_loaded == sum(m["loaded"] for m in load_json("health.json")["models"])
    assert health.models_loaded > 2
    await client.verify_auth()

    when = datetime(2026, 11, 23, 4, 30, tzinfo=UTC)
    event = await client.analyze(
        ImageUpload(content=b"jpegbytes"),
        camera="front_door",
        llm=False,
        timestamp=when,
        zone="porch",
        notify_level="medium",
    )
    assert isinstance(event, AnalysisEvent)
    recorded = load_json("event.json")
    assert (event.risk_score, event.risk_level, event.person_count) == (
        recorded["risk_score"],
        recorded["risk_level"],
        3,
    )
    assert event.addon_time_ms == sum(recorded["timings_ms"].values())
    assert addon.requests == [
        {
            "camera": "front_door",
            "llm": "false",
            "timestamp": when.isoformat(),
            "zone": "porch",
            "notify_level": "medium",
            "image": b"jpegbytes",
            "content_type": "image/jpeg",
        }
    ]

    detect = await client.detect(ImageUpload(content=b"png", content_type="image/png"))
    assert isinstance(detect, DetectResult)
    assert [d.label for d in detect.detections] == ["person", "person", "bus", "person"]

    latest = await client.latest_event("front_door")
    assert latest is not None and latest.risk_level == "low"
    assert await client.latest_event("empty") is None
    assert await client.snapshot(event.id) == b"\xff\xd8jpeg"

    person = await client.enroll_person(
        "Alex", [ImageUpload(content=b"a"), ImageUpload(content=b"b")]
    )
    assert (person.name, person.embeddings) == ("Alex", 2)
    addon.requests.clear()
    marked = await client.feedback(event.id, "false_alarm", "the bus")
    assert marked.id == event.id and marked.raw["feedback"]["verdict"] == "false_alarm"
    withdrawn = await client.feedback(event.id, "none")
    assert "feedback" not in withdrawn.raw
    assert addon.requests == [
        {
            "feedback": {"verdict": "false_alarm", "note": "the bus"},
            "content_type": "application/json",
        },
        {"feedback": {"verdict": "none"}, "content_type": "application/json"},
    ]
    addon.requests.clear()
    assert (await client.load_model("pose")).loaded is True
    assert (await client.load_model("pose", pin=True)).pinned is True
    assert (await client.load_model("pose", pin=False)).pinned is False
    assert (await client.unload_model("pose")).loaded is False
    assert [r["query"] for r in addon.requests] == [{}, {"pin": "true"}, {"pin": "false"}, {}]

    models = await client.models()
    recorded = load_json("models.json")["models"]
    assert [m.name for m in models] == [m["name"] for m in recorded]
    for model, raw in zip(models, recorded, strict=True):
        assert model.as_dict() == {k: raw[k] for k in model.as_dict()}
    assert {m.kind for m in models} == {"detector", "face_embedder", "zoo"}

    zoo = await client.zoo_status()
    assert zoo is not None
    raw_zoo = load_json("zoo_status.json")
    assert zoo.enabled is raw_zoo["enabled"]
    cpu = zoo.device("cpu")
    assert cpu is not None and zoo.device("cuda:7") is None
    raw_cpu = raw_zoo["devices"][0]
    assert (cpu.budget_mb, cpu.used_mb, cpu.utilization_percent) == (
        raw_cpu["vram_budget_mb"],
        raw_cpu["vram_used_mb"],
        raw_cpu["vram_utilization_percent"],
    )
    assert cpu.registered_models == tuple(raw_cpu["registered_models"])
    assert [m.name for m in cpu.loaded_models] == [m["name"] for m in raw_cpu["loaded_models"]]


async def test_errors(stand_in: tuple[StandIn, TestServer], session: ClientSession) -> None:
    """HTTP errors map onto the typed errors, with the add-on's code and message."""
    _, server = stand_in
    client = client_for(session, server)
    with pytest.raises(VigilNotFoundError) as err:
        await client.load_model("missing")
    assert (err.value.code, err.value.status) == ("unknown_model", 404)
    with pytest.raises(VigilModelNotInstalledError):
        await client.load_model("uninstalled")
    with pytest.raises(VigilResponseError) as err:
        await client.load_model("busy", pin=True)
    assert (err.value.code, err.value.status) == ("zoo_busy", 503)
    with pytest.raises(VigilResponseError) as err:
        await client.load_model("crash")
    assert (err.value.code, err.value.message) == ("http_500", "HTTP 500")
    with pytest.raises(VigilNotFoundError):
        await client.snapshot("nope")
    with pytest.raises(VigilNotFoundError) as err:
        await client.feedback("nope", "false_alarm")
    assert (err.value.code, err.value.message) == ("unknown_event", "no event 'nope'")
    with pytest.raises(VigilResponseError, match="not JSON"):
        await client._request("GET", "/broken")

    with pytest.raises(VigilAuthenticationError) as err:
        await client_for(session, server, token="wrong").verify_auth()
    assert err.value.message == "missing or wrong token"
    await client_for(session, server, token=None).health()  # /health needs no token


async def test_auth_without_model_zoo(session: ClientSession, socket_enabled: None) -> None:
    """An add-on without /v1/models or a zoo: a 404 after the token check means "accepted"."""
    app = web.Application(middlewares=[StandIn().auth])
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        await client_for(session, server).verify_auth()
        assert await client_for(session, server).zoo_status() is None
        with pytest.raises(VigilAuthenticationError):
            await client_for(session, server, token="wrong").verify_auth()
        with pytest.raises(VigilAuthenticationError):
            await client_for(session, server, token="wrong").zoo_status()
    finally:
        await server.close()


async def test_unreachable(session: ClientSession, socket_enabled: None) -> None:
    """Nothing listening: a connection error."""
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    port = server.port
    await server.close()
    client = VigilClient(session, host="127.0.0.1", port=port)
    with pytest.raises(VigilConnectionError):
        await client.health()


async def test_timeout(session: ClientSession, socket_enabled: None) -> None:
    """An add-on that does not answer in time: a connection error."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()  # answers only after the client gave up, however slow the machine
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/health", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        client = VigilClient(session, host="127.0.0.1", port=server.port, health_timeout=0.2)
        with pytest.raises(VigilConnectionError) as err:
            await client.health()
        assert err.value.code == "timeout"
    finally:
        release.set()
        await server.close()


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"status": "healthy"},
        {"instance_id": "x", "devices": {}},
    ],
)
def test_bad_health(payload: Any) -> None:
    """A /health answer without the contract's shape is a response error."""
    with pytest.raises(VigilResponseError):
        Health.from_dict(payload)


@pytest.mark.parametrize(
    "patch",
    [
        {"id": ""},
        {"timestamp": "yesterday"},
        {"timestamp": "2026-11-23T04:30:00"},
        {"risk_level": None},
    ],
)
def test_bad_event(patch: dict[str, Any]) -> None:
    """Events lacking an id, a level or a zoned timestamp are refused."""
    with pytest.raises(VigilResponseError):
        AnalysisEvent.from_dict(load_json("event.json") | patch)


def test_minimal_health() -> None:
    """Optional lists may be missing from /health."""
    health = Health.from_dict({"instance_id": "x", "status": "healthy"})
    assert (health.devices, health.models, health.issues) == ((), (), ())


def test_lenient_numbers() -> None:
    """Scores are clamped to 0-100; non-numbers count as zero."""
    event = AnalysisEvent.from_dict(
        load_json("event.json")
        | {"risk_score": 140.6, "counts": {"person": "two", "vehicle": True}}
    )
    assert event.risk_score == 100
    assert (event.person_count, event.vehicle_count) == (0, 0)
    assert json.dumps(event.factors[0].as_dict())


def test_minimal_zoo_status() -> None:
    """A zoo device needs its name; its lists may be missing."""
    zoo = ZooStatus.from_dict({"enabled": True, "devices": [{"device": "cpu"}]})
    assert zoo.devices[0].loaded_models == ()
    with pytest.raises(VigilResponseError):
        ZooStatus.from_dict({"devices": [{"vram_budget_mb": 1.0}]})
    with pytest.raises(VigilResponseError):
        ZooStatus.from_dict({"devices": {"cpu": {}}})


def test_enrichments_parse_by_field() -> None:
    """Results are read by their fields; odd entries are skipped, not fatal."""
    enrichments = Enrichments.from_dict(
        {
            "results": {
                "a": {"threats": [{"class_name": "knife", "confidence": 0.5}, "junk"]},
                "b": {"threats": {"not": "a list"}, "plates": [{"text": "", "confidence": 1}]},
                "c": {"pets": [{"species": "dog", "confidence": "high"}]},
            },
            "skipped": {"d": {"reason": "zoo_busy", "message": "busy"}},
        }
    )
    assert [(t.label, t.confidence) for t in enrichments.threats] == [("knife", 0.5)]
    assert enrichments.plates == ()
    assert [(p.species, p.confidence, p.household) for p in enrichments.pets] == [
        ("dog", 0.0, False)
    ]
    assert enrichments.skipped["d"].reason == "zoo_busy"
    assert Enrichments.from_dict(None).results == {}
    with pytest.raises(VigilResponseError):
        Enrichments.from_dict({"results": {"a": []}})
