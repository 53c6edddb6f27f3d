"""Credentials for an external LLM: sent the right way, never shown, stored or logged.

A real aiohttp server on loopback plays the external LLM and records the ``Authorization``
header it receives; the add-on itself is the real app with the real detector.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from addon_server.app import create_app
from addon_server.config import ConfigError, parse
from addon_server.reasoning.endpoint import Endpoint, normalise_base_url, redact
from addon_server.reasoning.reasoner import Reasoner
from addon_server.reasoning.risk import LLMStatus
from addon_server.reasoning.settings import LLMMode, ReasoningSettings
from addon_server.services import SERVICES_KEY

from .reasoning_scenes import scene

PASSWORD = "s3cret-Pa55"
KEY = "key-123"
ANSWER = {
    "risk_score": 30,
    "risk_level": "medium",
    "summary": "A person is at the front door.",
    "reasoning": "One person in daylight.",
    "factors": [],
}


def test_redact_hides_passwords_in_any_text() -> None:
    assert redact(f"http://vigil:{PASSWORD}@h:8080/v1") == "http://vigil:***@h:8080/v1"
    assert redact(f"GET https://u:{PASSWORD}@h/x failed") == "GET https://u:***@h/x failed"
    assert redact("http://h:8080/v1 and http://u@h") == "http://h:8080/v1 and http://u@h"
    endpoint = Endpoint.parse(f"http://vigil:{PASSWORD}@127.0.0.1:8080/v1/")
    assert endpoint.url == "http://127.0.0.1:8080"
    assert endpoint.basic_auth == "Basic " + base64.b64encode(f"vigil:{PASSWORD}".encode()).decode()
    assert PASSWORD not in repr(endpoint)
    assert normalise_base_url(f"http://vigil:{PASSWORD}@h/v1") == "http://h"


def test_settings_repr_and_config_errors_hide_secrets() -> None:
    s = ReasoningSettings(mode=LLMMode.EXTERNAL, url=f"http://u:{PASSWORD}@h", api_key=KEY)
    assert PASSWORD not in repr(s)
    assert KEY not in repr(s)
    with pytest.raises(ConfigError) as info:
        parse({"llm": {"url": f"ftp://u:{PASSWORD}@h"}}, environ={})
    assert "llm.url" in str(info.value)
    assert PASSWORD not in str(info.value)


def recording_llm(seen: list[str | None]) -> web.Application:
    """An OpenAI-compatible server that notes each request's Authorization header."""

    async def models(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"object": "list", "data": [{"id": "m"}]})

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response(
            {
                "model": "m",
                "choices": [{"message": {"content": json.dumps(ANSWER)}, "finish_reason": "stop"}],
            }
        )

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.mark.parametrize(
    ("api_key", "expected"),
    [
        (KEY, f"Bearer {KEY}"),  # the key wins; the URL's user:password is dropped
        (None, "Basic " + base64.b64encode(f"vigil:{PASSWORD}".encode()).decode()),
    ],
)
async def test_url_credentials_and_api_key(
    api_key: str | None, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Both set used to stop the add-on from starting (aiohttp: "Cannot combine
    AUTHORIZATION header with AUTH argument or credentials encoded in URL")."""
    seen: list[str | None] = []
    server = TestServer(recording_llm(seen), host="127.0.0.1")
    await server.start_server()
    caplog.set_level(logging.DEBUG)
    url = f"http://vigil:{PASSWORD}@127.0.0.1:{server.port}/v1"
    r = Reasoner(ReasoningSettings(mode=LLMMode.EXTERNAL, url=url, api_key=api_key))
    try:
        await r.start()
        health = await r.health()
        assert health["state"] == "ready", health
        assert health["url"] == f"http://127.0.0.1:{server.port}"
        a = await r.assess(scene("person"))
        assert a.llm_status is LLMStatus.OK, a.llm_error
    finally:
        await r.stop()
        await server.close()
    assert seen
    assert set(seen) == {expected}
    assert PASSWORD not in caplog.text
    if api_key:
        assert "ignoring the URL's credentials" in caplog.text


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port  # closed again when the socket is: nothing listens there


async def test_password_in_llm_url_is_never_shown_stored_or_logged(
    aiohttp_client: Any,
    make_settings: Any,
    counting_detector: Any,
    bus_jpg: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(
        {
            "llm": {"mode": "external", "connect_timeout_s": 0.5},
            "detector": {"warmup": False},
            "reasoning": {"llm_policy": "always"},
        },
        LLM_URL=f"http://vigil:{PASSWORD}@127.0.0.1:{closed_port()}/v1",
    )
    client = await aiohttp_client(create_app(settings, detector=counting_detector))

    health = await client.get("/health")
    assert health.status == 200
    health_text = await health.text()
    assert json.loads(health_text)["llm"]["state"] == "unavailable"
    assert PASSWORD not in health_text

    resp = await client.post(
        "/v1/analyze",
        params={"camera": "front_door"},
        data=bus_jpg,
        headers={"Content-Type": "image/jpeg"},
    )
    assert resp.status == 200, await resp.text()
    initial = await resp.json()
    await client.app[SERVICES_KEY].analyzer.refiner.join()
    stored = await (await client.get(f"/v1/events/{initial['id']}")).text()
    event = json.loads(stored)
    assert event["llm_status"] == "failed"
    assert event["llm_error"]  # the failure is stated...
    assert "127.0.0.1" in event["llm_error"]  # ...with the server it concerns...
    for text in (json.dumps(initial), stored):
        assert PASSWORD not in text  # ...and without its password
    assert PASSWORD not in caplog.text
