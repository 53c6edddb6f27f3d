"""Property-based API testing: schemathesis drives the real add-on from its own /openapi.json.

For every documented operation, schemathesis generates requests from the published parameter
and body schemas, valid ones and deliberately invalid ones, and sends them to the real app
(real detector, real face re-ID, real SQLite) over loopback with the configured token. A run
fails on any 5xx and on any answer the document does not describe: an undocumented status, a
wrong content type, a missing documented header or a body outside the documented schema.

It is bounded, so it can run in every ``make test``: hypothesis is derandomised (the same
examples every run, no example database) and each operation gets ``MAX_EXAMPLES`` examples.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from addon_server.api import ALL_ROUTES
from addon_server.api.openapi import build_spec
from addon_server.app import create_app
from addon_server.config import parse
from addon_server.detector.base import Detector
from tests.addon_server.conftest import HANG_TIMEOUT_S, SHARED_MODELS, CountingDetector

TOKEN = "schemathesis-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_EXAMPLES = 100
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class LiveAddon:
    """The real app on a loopback port, served by its own event loop in a thread.

    schemathesis sends requests synchronously from the test, so the server cannot share the
    test's loop.
    """

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.thread = threading.Thread(target=self.loop.run_forever, name="addon", daemon=True)
        self.url = ""

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=HANG_TIMEOUT_S)

    async def _start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        cleanup = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        cleanup.result(timeout=HANG_TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=HANG_TIMEOUT_S)
        self.loop.close()


@pytest.fixture(scope="module")
def live_addon(
    tmp_path_factory: pytest.TempPathFactory, darknet_detector: Detector
) -> Iterator[str]:
    data: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    settings_ = parse(
        {
            "server": {"data_dir": str(data), "api_token": TOKEN},
            "detector": {"warmup": False},
            "batching": {"autotune": False},
            "llm": {"mode": "disabled"},
            "reid": {"models_dir": str(SHARED_MODELS)},
        },
        environ={},
    )
    addon = LiveAddon(create_app(settings_, detector=CountingDetector(darknet_detector)))
    addon.start()
    yield addon.url
    addon.stop()


# The add-on also accepts the common misspelling image/jpg: send it the bytes of a JPEG.
schemathesis.serializer.alias("image/jpg", "image/jpeg")
spec = schemathesis.openapi.from_dict(build_spec(ALL_ROUTES))
"""The document the app serves (checked below against the running add-on's /openapi.json).

Built at import because schemathesis's lazy ``from_fixture`` loader does not run on pytest 9.
"""
schema = spec.exclude(operation_id="stream_events")
"""What is fuzzed: all but the event stream, whose answer never ends (a request would only
time out); test_two_phase.py drives the stream, its errors included."""


def test_the_fuzzed_document_is_the_served_one(live_addon: str) -> None:
    with urllib.request.urlopen(
        urllib.request.Request(f"{live_addon}/openapi.json", headers=AUTH), timeout=HANG_TIMEOUT_S
    ) as resp:
        assert json.load(resp) == spec.raw_schema


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_honours_the_published_contract(
    case: schemathesis.Case, live_addon: str
) -> None:
    case.call_and_validate(base_url=live_addon, headers=AUTH, checks=CHECKS, timeout=HANG_TIMEOUT_S)
