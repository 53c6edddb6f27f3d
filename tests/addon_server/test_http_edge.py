"""The HTTP edge, over real sockets to the real server that ``serve`` runs (addon_server.server).

Requests aiohttp cannot parse never reach the app's middleware; idle, slow and surplus
connections are the server's to close. Each test sends raw bytes, as a hostile or broken client
would, and checks the answer is the API's JSON error shape and that the server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from addon_server.app import create_app
from addon_server.server import start
from tests.addon_server.conftest import HANG_TIMEOUT_S, CountingDetector
from tests.addon_server.raw_http import (
    HOST,
    RawResponse,
    connect_sending,
    exchange,
    get,
    read_response,
)

# Generous bounds for "eventually": the assertions never depend on how fast the machine is.
EVENTUALLY_S = HANG_TIMEOUT_S


class Edge:
    """A running server and its port."""

    def __init__(self, runner: web.AppRunner) -> None:
        self.runner = runner
        self.port: int = runner.addresses[0][1]


@contextlib.asynccontextmanager
async def running(settings: Any, counting_detector: CountingDetector) -> AsyncIterator[Edge]:
    app = create_app(settings, detector=counting_detector)
    runner = await start(app, replace(settings.server, port=0))
    try:
        yield Edge(runner)
    finally:
        await runner.cleanup()


def _settings(make_settings: Any, **server: Any) -> Any:
    return make_settings({"detector": {"warmup": False}, "server": {"max_body_mb": 1, **server}})


@pytest.fixture
async def edge(make_settings, counting_detector) -> AsyncIterator[Edge]:
    async with running(_settings(make_settings), counting_detector) as server:
        yield server


def _assert_json_error(resp: RawResponse, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, resp
    assert resp.content_type == "application/json", resp
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


async def _healthy(port: int) -> None:
    resp = await exchange(port, get("/health"))
    assert resp.status == 200
    assert resp.content_type == "application/json"


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before it closed the connection (b"" when it just hung up)."""
    return await asyncio.wait_for(reader.read(), EVENTUALLY_S)


POST_DETECT = "POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        get("/health", "X-Big: " + "a" * 9000),
        get("/health", *(f"X-H{i}: v" for i in range(200))),
        get("/" + "a" * 9000),
        (POST_DETECT + "Content-Length: abc\r\n\r\n").encode(),
        (POST_DETECT + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello").encode(),
        get("/health", "X-Nul: a\x00b"),
        get("/health", "X-Cr: a\rb"),
        get("/health", "X\x01Ctl: b"),
        b"GARBAGE\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
    ],
    ids=[
        "oversized-header",
        "too-many-headers",
        "oversized-request-line",
        "bad-content-length",
        "two-content-lengths",
        "nul-in-header",
        "cr-in-header",
        "control-in-header-name",
        "bad-request-line",
        "bad-http-version",
        "tls-to-http",
    ],
)
async def test_unparsable_requests_get_json_errors(edge: Edge, request_bytes: bytes) -> None:
    resp = await exchange(edge.port, request_bytes)
    error = _assert_json_error(resp, 400, "bad_request")
    assert error["message"].startswith("malformed HTTP request")
    await _healthy(edge.port)


async def test_method_not_allowed_lists_the_allowed_methods(edge: Edge) -> None:
    error = _assert_json_error(
        await exchange(edge.port, get("/v1/detect")), 405, "method_not_allowed"
    )
    resp = await exchange(edge.port, get("/v1/detect"))
    assert resp.headers["allow"] == "POST"
    assert "GET" in error["message"] and "POST" in error["message"]
    delete = b"DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n"
    resp = await exchange(edge.port, delete)
    _assert_json_error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "GET"


async def test_idle_connections_are_closed(make_settings, counting_detector) -> None:
    settings = _settings(make_settings, keepalive_timeout_s=0.5)
    async with running(settings, counting_detector) as edge:
        # A connection that never sends a request...
        silent_reader, silent_writer = await asyncio.open_connection(HOST, edge.port)
        # ... and one that sent one and then went quiet.
        reader, writer = await connect_sending(edge.port, get("/health"))
        assert (await read_response(reader)).status == 200
        assert await _closed_by_server(silent_reader) == b""
        assert await _closed_by_server(reader) == b""
        silent_writer.close()
        writer.close()
        await _healthy(edge.port)


async def _trickle(writer: asyncio.StreamWriter, data: bytes, until: asyncio.Task[Any]) -> None:
    """Send ``data`` a byte every 50 ms until ``until`` is done (slowloris)."""
    for byte in data:
        if until.done():
            return
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("part", ["headers", "body"])
async def test_slow_clients_are_dropped(make_settings, counting_detector, bus_jpg, part) -> None:
    # The keep-alive timeout is long: the read timeout is what drops them.
    settings = _settings(make_settings, keepalive_timeout_s=600, read_timeout_s=1)
    async with running(settings, counting_detector) as edge:
        reader, writer = await asyncio.open_connection(HOST, edge.port)
        head = f"{POST_DETECT}Content-Length: {len(bus_jpg)}\r\n\r\n".encode()
        if part == "headers":
            slow = head
        else:
            writer.write(head)
            slow = bus_jpg
        closed = asyncio.create_task(_closed_by_server(reader))
        await _trickle(writer, slow[: int(20 * EVENTUALLY_S)], closed)
        assert await closed == b""  # dropped, without an answer to a request never completed
        writer.close()
        await _healthy(edge.port)
        assert counting_detector.calls == []


async def test_surplus_idle_connections_cannot_starve_the_server(
    make_settings, counting_detector, bus_jpg
) -> None:
    # Long timeouts: the cap alone decides which connections close, however long the steps
    # before the busy request's last bytes take.
    settings = _settings(
        make_settings, max_connections=20, keepalive_timeout_s=600, read_timeout_s=600
    )
    async with running(settings, counting_detector) as edge:
        # A client midway through a request is busy, and is never closed to make room.
        busy_reader, busy_writer = await asyncio.open_connection(HOST, edge.port)
        busy_writer.write(f"{POST_DETECT}Content-Length: {len(bus_jpg)}\r\n\r\n".encode())
        busy_writer.write(bus_jpg[:1000])
        await busy_writer.drain()
        await _healthy(edge.port)  # the busy request's headers have arrived by now

        idle = [await asyncio.open_connection(HOST, edge.port) for _ in range(50)]
        await _healthy(edge.port)
        # 52 connections against a cap of 20: the oldest idle ones made room for the newer.
        for reader, _ in idle[:30]:
            assert await _closed_by_server(reader) == b""

        busy_writer.write(bus_jpg[1000:])
        resp = await asyncio.wait_for(read_response(busy_reader), EVENTUALLY_S)
        assert resp.status == 200
        assert counting_detector.calls == [1]
        for _, writer in [*idle, (busy_reader, busy_writer)]:
            writer.close()
