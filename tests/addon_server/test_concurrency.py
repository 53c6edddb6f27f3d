"""Simultaneous analyses on the real add-on: no 500s, no crash, and a bounded waiting line.

The burst runs against ``python -m addon_server`` in a subprocess, so an OpenCV object shared
between worker threads that crashes the process (it did: SIGSEGV in ``detectMultiScale``) fails
this test instead of killing pytest. The admission cap is checked in-process, where the real
detector can be held at a gate to fill the slots deterministically.
"""

from __future__ import annotations

import asyncio
import collections
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from addon_server.app import create_app
from addon_server.services import SERVICES_KEY
from tests.addon_server.conftest import (
    HANG_TIMEOUT_S,
    CountingDetector,
    eventually,
    needs_shared_models,
)
from tests.e2e.test_addon_process import running_addon

CAMERAS = ("front_door", "garden", "garage")
BURSTS = 4
CALLS = 6

pytestmark = pytest.mark.slow


def _analyze_status(url: str, image: bytes) -> str:
    request = urllib.request.Request(
        url, data=image, method="POST", headers={"Content-Type": "image/jpeg"}
    )
    try:
        with urllib.request.urlopen(request, timeout=HANG_TIMEOUT_S) as resp:
            resp.read()
            return str(resp.status)
    except urllib.error.HTTPError as err:
        return str(err.code)
    except OSError as err:  # the process died under the burst
        return f"no answer ({type(err).__name__})"


@needs_shared_models("faceres.onnx")  # without an embedder no face is searched
def test_bursts_of_mixed_size_frames_all_succeed(
    tmp_path: Path, bus_jpg: bytes, zidane_jpg: bytes
) -> None:
    """Three cameras of different resolutions (810x1080 and 1280x720) analysed at once.

    Six analyses may run together (more slots than the default) so that face searches really
    overlap in the worker threads. At 70a1817 (one shared Haar cascade) such bursts gave 500s
    (``cv2.error … getScaleData``) on about 30 % of calls and killed the add-on with SIGSEGV.
    """
    (tmp_path / "vigil.yaml").write_text(
        f"analysis: {{max_concurrent: {CALLS}}}\n", encoding="utf-8"
    )
    images = (bus_jpg, zidane_jpg)
    with running_addon(tmp_path, LLM_MODE="disabled") as base:
        statuses: list[str] = []
        with ThreadPoolExecutor(CALLS) as pool:
            for _ in range(BURSTS):
                statuses += pool.map(
                    lambda i: _analyze_status(
                        f"{base}/v1/analyze?llm=false&camera={CAMERAS[i % len(CAMERAS)]}",
                        images[i % len(images)],
                    ),
                    range(CALLS),
                )
    assert statuses == ["200"] * (BURSTS * CALLS), collections.Counter(statuses)


@pytest.fixture
def one_slot_one_waiting(make_settings):
    return make_settings(
        {"detector": {"warmup": False}, "analysis": {"max_concurrent": 1, "max_waiting": 1}}
    )


async def test_a_full_waiting_line_answers_429_busy(
    aiohttp_client, one_slot_one_waiting, counting_detector: CountingDetector, bus_jpg: bytes
) -> None:
    """One analysis runs, one waits its turn, the next is refused at once with Retry-After."""
    client = await aiohttp_client(create_app(one_slot_one_waiting, detector=counting_detector))
    admission = client.app[SERVICES_KEY].analyzer.admission

    def post() -> asyncio.Task[tuple[int, dict[str, object], str | None]]:
        async def call() -> tuple[int, dict[str, object], str | None]:
            resp = await client.post(
                "/v1/analyze",
                params={"camera": "front_door", "llm": "false"},
                data=bus_jpg,
                headers={"Content-Type": "image/jpeg"},
            )
            return resp.status, await resp.json(), resp.headers.get("Retry-After")

        return asyncio.create_task(call())

    counting_detector.gate.clear()  # the first analysis holds its slot inside the detector
    counting_detector.entered.clear()
    try:
        running = post()
        assert await asyncio.to_thread(counting_detector.entered.wait, HANG_TIMEOUT_S)
        waiting = post()
        await eventually(lambda: admission.waiting == 1, "the second analysis waits its turn")
        status, body, retry_after = await post()
        assert status == 429
        assert body["error"]["code"] == "busy"  # type: ignore[index]
        assert retry_after is not None and int(retry_after) >= 1
    finally:
        counting_detector.gate.set()
    for task in (running, waiting):
        status, body, _ = await task
        assert status == 200, body  # the one that waited got its turn
    assert admission.waiting == 0
