"""The OpenAI client against a real HTTP server that misbehaves on purpose.

llama.cpp itself is exercised in test_reasoning_llm_server.py; here a small aiohttp app plays
an OpenAI-compatible server so every failure mode (HTTP 500, slow, garbage, wrong shape) is
reproducible in milliseconds, and we check what goes over the wire.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from addon_server.reasoning.llm import (
    ANSWER_SCHEMA,
    LLMClient,
    LLMClientConfig,
    LLMError,
    LLMErrorKind,
    ResponseFormat,
    normalise_base_url,
    parse_answer,
)
from addon_server.reasoning.prompt import build_messages
from addon_server.reasoning.reasoner import LLMMode, Reasoner, ReasoningSettings
from addon_server.reasoning.risk import LLMStatus
from tests.addon_server.conftest import HANG_TIMEOUT_S, LLM_HANG_GUARDS

from .reasoning_scenes import NIGHT, scene

GOOD = {
    "risk_score": 72,
    "risk_level": "low",
    "summary": "Someone at the door at night.",
    "reasoning": "Unknown person at 02:14.",
    "factors": [{"name": "night", "points": 20, "detail": "02:14"}],
}


def completion(content: str) -> dict[str, Any]:
    return {
        "model": "fake-llm",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
    }


Start = Callable[[web.Application], Awaitable[TestServer]]

RELEASE = web.AppKey("release", asyncio.Event)
"""Holds the "slow" server's answers until the test ends: slower than any client timeout,
however busy the machine (a fixed sleep is only slower than it on a quiet one)."""


@pytest.fixture
async def start() -> Any:
    servers: list[TestServer] = []

    async def _start(app: web.Application) -> TestServer:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield _start
    for s in servers:
        s.app[RELEASE].set()
        await s.close()


def fake_llm(behaviour: str, seen: list[dict[str, Any]]) -> web.Application:
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-llm"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        body["_auth"] = request.headers.get("Authorization")
        seen.append(body)
        if behaviour == "good":
            return web.json_response(completion(json.dumps(GOOD)))
        if behaviour == "http500":
            return web.json_response({"error": "boom"}, status=500)
        if behaviour == "slow":
            await request.app[RELEASE].wait()
            return web.json_response(completion(json.dumps(GOOD)))
        if behaviour == "prose":
            return web.json_response(completion("The scene looks fine to me!"))
        if behaviour == "no_choices":
            return web.json_response({"choices": []})
        if behaviour == "html":
            return web.Response(text="<html>proxy error</html>", content_type="text/html")
        raise AssertionError(behaviour)

    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def client_for(
    start: Start, behaviour: str, **cfg: Any
) -> tuple[LLMClient, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    server = await start(fake_llm(behaviour, seen))
    return LLMClient(str(server.make_url("/v1")), LLMClientConfig(**cfg)), seen


async def test_request_shape_json_object_form(start: Start) -> None:
    client, seen = await client_for(start, "good", max_tokens=200, api_key="k3y")
    async with client:
        ans = await client.complete(build_messages(scene("person", at=NIGHT)))
    assert ans.risk_score == 72
    assert ans.risk_level == "low"
    assert ans.model == "fake-llm"
    assert ans.prompt_tokens == 10
    assert ans.latency_s is not None
    body = seen[0]
    assert body["response_format"] == {"type": "json_object", "schema": ANSWER_SCHEMA}
    assert body["max_tokens"] == 200
    assert body["stream"] is False
    assert body["model"] == "fake-llm"  # resolved from /v1/models
    assert body["_auth"] == "Bearer k3y"
    assert body["messages"][0]["role"] == "system"


async def test_request_shape_json_schema_and_none_forms(start: Start) -> None:
    client, seen = await client_for(
        start, "good", response_format=ResponseFormat.JSON_SCHEMA, model="m"
    )
    async with client:
        await client.complete([{"role": "user", "content": "hi"}])
    rf = seen[0]["response_format"]
    assert rf["type"] == "json_schema"
    assert rf["json_schema"]["schema"] == ANSWER_SCHEMA
    assert seen[0]["model"] == "m"
    assert seen[0]["_auth"] is None
    client, seen = await client_for(start, "good", response_format=ResponseFormat.NONE)
    async with client:
        await client.complete([{"role": "user", "content": "hi"}])
    assert "response_format" not in seen[0]


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [
        ("http500", LLMErrorKind.HTTP),
        ("prose", LLMErrorKind.PARSE),
        ("no_choices", LLMErrorKind.PARSE),
        ("html", LLMErrorKind.PARSE),
    ],
)
async def test_failures_are_typed(start: Start, behaviour: str, kind: LLMErrorKind) -> None:
    client, _ = await client_for(start, behaviour)
    async with client:
        with pytest.raises(LLMError) as info:
            await client.complete([{"role": "user", "content": "x"}])
    assert info.value.kind is kind


async def test_timeout_is_typed_and_bounded(start: Start) -> None:
    """The client's own timeout ends the call: the server has not answered (and will not)."""
    client, _ = await client_for(start, "slow", timeout_s=0.3)
    async with client:
        with pytest.raises(LLMError) as info:
            # The hang guard raises TimeoutError, not LLMError: it would fail the test.
            await asyncio.wait_for(
                client.complete([{"role": "user", "content": "x"}]), HANG_TIMEOUT_S
            )
    assert info.value.kind is LLMErrorKind.TIMEOUT


async def test_connection_refused_is_typed(unused_tcp_port: int) -> None:
    async with LLMClient(f"http://127.0.0.1:{unused_tcp_port}", LLMClientConfig(model="m")) as c:
        with pytest.raises(LLMError) as info:
            await c.complete([{"role": "user", "content": "x"}])
    assert info.value.kind is LLMErrorKind.CONNECTION
    # Users read this in a repair: words, not a Python repr of aiohttp's connection key.
    assert f"Cannot connect to host 127.0.0.1:{unused_tcp_port}" in str(info.value)
    assert "ConnectionKey(" not in str(info.value)


async def test_parallel_slots_bound_requests_in_flight(start: Start) -> None:
    client, _ = await client_for(
        start, "slow", parallel=1, queue_timeout_s=0.1, timeout_s=0.5, model="m"
    )
    async with client:
        both = asyncio.gather(
            client.complete([{"role": "user", "content": "a"}]),
            client.complete([{"role": "user", "content": "b"}]),
            return_exceptions=True,
        )
        results = await asyncio.wait_for(both, HANG_TIMEOUT_S)
    kinds = sorted(r.kind.value for r in results if isinstance(r, LLMError))
    assert kinds == ["busy", "timeout"]


def test_parse_answer_clamps_and_tolerates() -> None:
    a = parse_answer(
        '```json\n{"risk_score": "250", "risk_level": "SEVERE",'
        ' "factors": [1, {"name": "x", "points": 9e9}]}\n```'
    )
    assert a.risk_score == 100
    assert a.risk_level is None
    assert [(f.name, f.points) for f in a.factors] == [("x", 100)]
    assert parse_answer('{"risk_score": -3.6, "risk_level": " High "}').risk_level == "high"
    assert parse_answer('{"risk_score": -3.6}').risk_score == 0
    for bad in [
        "",
        "[]",
        '{"risk_score": null}',
        '{"risk_score": true}',
        '{"risk_score": NaN}',
        "{",
    ]:
        with pytest.raises(LLMError) as info:
            parse_answer(bad)
        assert info.value.kind is LLMErrorKind.PARSE


def test_normalise_base_url() -> None:
    for url in ["http://h:8080", "http://h:8080/", "http://h:8080/v1", " http://h:8080/v1/ "]:
        assert normalise_base_url(url) == "http://h:8080"
    with pytest.raises(ValueError, match="http"):
        normalise_base_url("h:8080")


async def test_reasoner_external_mode_uses_json_schema_and_reports_health(start: Start) -> None:
    seen: list[dict[str, Any]] = []
    server = await start(fake_llm("good", seen))
    r = Reasoner(
        ReasoningSettings(
            mode=LLMMode.EXTERNAL,
            url=str(server.make_url("")),
            api_key="sekr1t-key",
            **LLM_HANG_GUARDS,
        )
    )
    await r.start()
    try:
        health = await r.health()
        assert health["state"] == "ready"
        assert health["model"] == "fake-llm"
        assert "sekr1t" not in json.dumps(health)
        a = await r.assess(scene("person", at=NIGHT))
        assert a.llm_status is LLMStatus.OK
        assert a.llm_score == 72
        assert a.risk_level.value in {"medium", "high"}  # never the model's "low" at this score
        assert seen[0]["response_format"]["type"] == "json_schema"
        assert seen[0]["_auth"] == "Bearer sekr1t-key"
        off = await r.assess(scene("person", at=NIGHT), use_llm=False)
        assert off.llm_status is LLMStatus.DISABLED
        assert off.risk_score == a.rule_score
        assert r.issues() == []
    finally:
        await r.stop()


async def test_reasoner_external_unreachable_falls_back(unused_tcp_port: int) -> None:
    r = Reasoner(
        ReasoningSettings(
            mode=LLMMode.EXTERNAL, url=f"http://127.0.0.1:{unused_tcp_port}", connect_timeout_s=0.5
        )
    )
    await r.start()  # must not raise
    try:
        assert (await r.health())["state"] == "unavailable"
        a = await r.assess(scene("person"))
        assert a.llm_status is LLMStatus.FALLBACK
        assert a.llm_error
        assert "connection" in a.llm_error
        assert a.risk_score == 25  # the rules' verdict: a caller by day
        assert a.risk_level.value == "low"
        assert [i["code"] for i in r.issues()] == ["llm_unavailable"]
        assert r.stats.llm_fallback["connection"] == 1
    finally:
        await r.stop()


async def test_reasoner_disabled() -> None:
    r = Reasoner(ReasoningSettings(mode=LLMMode.DISABLED))
    await r.start()
    a = await r.assess(scene("person"))
    assert a.llm_status is LLMStatus.DISABLED
    assert a.risk_score == 25
    assert (await r.health())["state"] == "disabled"
    assert r.issues() == []
    await r.stop()


def test_settings_from_config_and_auto_format() -> None:
    s = ReasoningSettings.from_config(
        {"mode": "supervised", "model_path": None, "ctx_size": 1024, "parallel": 2},
        {"weights": {"rules": 0.7, "llm": 0.3}, "rules": {"night_points": 30}},
    )
    assert s.ctx_size == 1024
    assert s.weights.rules == 0.7
    assert s.rules.night_points == 30
    assert s.resolved_response_format() is ResponseFormat.JSON_OBJECT
    ext = ReasoningSettings.from_config({"mode": "external", "url": "http://x:1"})
    assert ext.resolved_response_format() is ResponseFormat.JSON_SCHEMA
    with pytest.raises(ValueError, match="url"):
        ReasoningSettings(mode=LLMMode.EXTERNAL)
    with pytest.raises(ValueError, match="bogus"):
        ReasoningSettings(response_format="bogus")


def test_parse_answer_cleans_text_a_small_model_really_emitted() -> None:
    # Seen from SmolLM2 under the grammar: a raw tab/CR in a string, a lone surrogate, huge ints.
    raw = (
        '{"risk_score": -10, "risk_level": "low", "summary": "a\tb\r", "reasoning": "",'
        ' "factors": [{"name": "\\uDACABRAL", "points": 95284367, "detail": "x\x01y"}]}'
    )
    a = parse_answer(raw)
    assert a.risk_score == 0
    assert a.summary == "a b"
    f = a.factors[0]
    assert (f.name, f.points, f.detail) == ("BRAL", 100, "x y")
    json.dumps(a.summary).encode()
    f.name.encode("utf-8")  # no lone surrogate survives
