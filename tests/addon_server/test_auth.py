"""Bearer-token auth on every route but /health; no token means loopback only."""

from __future__ import annotations

import logging

import pytest

from addon_server.app import create_app
from addon_server.cli import secure_bind
from tests.addon_server.conftest import CountingDetector
from tests.addon_server.raw_http import exchange

TOKEN = "s3cret-token"


@pytest.fixture
async def client(aiohttp_client, make_settings, counting_detector: CountingDetector):
    settings = make_settings({"detector": {"warmup": False}}, VIGIL_API_TOKEN=TOKEN)
    return await aiohttp_client(create_app(settings, detector=counting_detector))


async def test_health_is_open(client) -> None:
    resp = await client.get("/health")
    assert resp.status == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/detect"), ("GET", "/metrics"), ("GET", "/openapi.json")],
)
@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing bearer token"),
        ("Bearer wrong", "invalid bearer token"),
        ("Basic " + TOKEN, "missing bearer token"),
        (f"Bearer {TOKEN}x", "invalid bearer token"),
    ],
)
async def test_protected_routes_refuse_bad_tokens(client, method, path, header, message) -> None:
    headers = {"Authorization": header} if header else {}
    resp = await client.request(method, path, headers=headers)
    assert resp.status == 401
    assert "Bearer" in resp.headers["WWW-Authenticate"]
    body = await resp.json()
    assert body["error"] == {"code": "unauthorized", "message": body["error"]["message"]}
    assert message in body["error"]["message"]


async def test_right_token_is_accepted(client, bus_jpg) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    resp = await client.post(
        "/v1/detect", data=bus_jpg, headers={**auth, "Content-Type": "image/jpeg"}
    )
    assert resp.status == 200
    assert (await client.get("/metrics", headers=auth)).status == 200


def test_no_token_binds_loopback_only(make_settings, caplog) -> None:
    open_settings = make_settings({"server": {"host": "0.0.0.0"}})
    with caplog.at_level(logging.WARNING):
        bound = secure_bind(open_settings)
    assert bound.server.host == "127.0.0.1"
    assert "no VIGIL_API_TOKEN" in caplog.text
    with_token = make_settings({"server": {"host": "0.0.0.0"}}, VIGIL_API_TOKEN=TOKEN)
    assert secure_bind(with_token).server.host == "0.0.0.0"


@pytest.mark.parametrize(
    "value", [b"Bearer \xff", b"Bearer " + TOKEN.encode() + b"\xff", b"\xff\xfe " + TOKEN.encode()]
)
async def test_non_utf8_authorization_is_refused(client, value: bytes) -> None:
    """Header bytes that are not UTF-8 reach the check as surrogates: a 401, never a 500."""
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n\r\n"
    resp = await exchange(client.server.port, request)
    assert resp.status == 401
    assert resp.content_type == "application/json"
    assert resp.json()["error"]["code"] == "unauthorized"
    assert "Bearer" in resp.headers["www-authenticate"]
