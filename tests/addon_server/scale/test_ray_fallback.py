"""``BACKEND=ray`` / ``LLM_MODE=ray`` without their cluster: the add-on degrades, not fails.

No Ray here: the Serve application's address is a loopback port where nothing listens (a host
that is gone), so every stage call is refused for real. The detector falls back to the
add-on's embedded yolov3-tiny and the analysis answers ``degraded`` with the stage named; the
LLM's refinement fails with ``llm`` named. The one stand-in is a small aiohttp server speaking
the ingress' routes, for "the stage answers again": its detections are the same real model's.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from addon_server.app import create_app
from addon_server.detector import EMBEDDED_MODEL_NAME
from addon_server.detector.base import Detector
from addon_server.ray_serve.client import detection_row
from tests.addon_server.conftest import HANG_TIMEOUT_S, CountingDetector, free_ports

TOKEN = "fallback-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JPEG = {"Content-Type": "image/jpeg", **AUTH}


def ray_settings(make_settings: Any, port: int, **env: str) -> Any:
    return make_settings(
        {"server": {"api_token": TOKEN}, "detector": {"warmup": False}},
        BACKEND="ray",
        RAY_SERVE_URL=f"http://127.0.0.1:{port}/vigil",
        **env,
    )


async def analyze(client: Any, image: bytes, **params: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post(
        "/v1/analyze", params={"camera": "porch", **params}, data=image, headers=JPEG
    )
    found: dict[str, Any] = await resp.json()
    return resp.status, found


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Ask ``check`` until it holds; only a hang trips the bound, never slowness."""
    deadline = time.monotonic() + HANG_TIMEOUT_S
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {HANG_TIMEOUT_S:.0f} s"
        await asyncio.sleep(0.05)


async def stages_down(client: Any) -> list[str]:
    health = await (await client.get("/health")).json()
    return [i["service"] for i in health["issues"] if i["code"] == "stage_unavailable"]


async def test_the_detector_falls_back_when_its_host_is_gone(
    aiohttp_client: Any, make_settings: Any, bus_jpg: bytes, darknet_detector: Detector
) -> None:
    (port,) = free_ports(1)  # nothing listens: the cluster (its ingress) is gone
    client = await aiohttp_client(create_app(ray_settings(make_settings, port)))

    status, event = await analyze(client, bus_jpg)

    assert status == 200, event
    assert event["degraded"] is True
    assert event["missing_stages"] == ["detector", "zoo"]  # the zoo is on the cluster too
    assert event["model"] == EMBEDDED_MODEL_NAME
    assert event["counts"]["person"] >= 3  # the embedded model's real boxes on bus.jpg
    assert event["risk_level"]
    assert await stages_down(client) == ["detector", "zoo"]
    health = await (await client.get("/health")).json()
    assert health["model_loaded"] is True and health["status"] == "degraded"

    resp = await client.post("/v1/detect", data=bus_jpg, headers=JPEG)  # the stage alone
    found = await resp.json()
    assert resp.status == 200, found
    assert found["model"] == EMBEDDED_MODEL_NAME and found["detections"]
    assert (found["degraded"], found["missing_stages"]) == (True, ["detector"])


async def test_concurrent_mixed_size_analyses_each_get_their_own_fallback_boxes(
    aiohttp_client: Any, make_settings: Any, bus_jpg: bytes, zidane_jpg: bytes
) -> None:
    """Analyses of two image sizes at once, the cluster gone: the fallback (one OpenCV net,
    the batcher's thread) gives each image the boxes it gives that image alone."""
    (port,) = free_ports(1)
    client = await aiohttp_client(create_app(ray_settings(make_settings, port)))
    alone = {}
    for name, image in (("bus", bus_jpg), ("zidane", zidane_jpg)):
        status, event = await analyze(client, image, use_llm="false")
        assert status == 200, event
        alone[name] = event["detections"]

    names = ["bus", "zidane"] * 4
    images = {"bus": bus_jpg, "zidane": zidane_jpg}
    answers = await asyncio.gather(*(analyze(client, images[n], use_llm="false") for n in names))

    for name, (status, event) in zip(names, answers, strict=True):
        assert status == 200, event
        assert event["model"] == EMBEDDED_MODEL_NAME and event["degraded"] is True
        assert event["missing_stages"][0] == "detector"
        found, expected = event["detections"], alone[name]
        # A batched forward pass may differ from a single one in the last float bits.
        assert [d["class"] for d in found] == [d["class"] for d in expected], name
        for one, other in zip(found, expected, strict=True):
            assert one["confidence"] == pytest.approx(other["confidence"], abs=1e-3)
            for key in ("x", "y", "width", "height"):
                assert abs(one["bbox"][key] - other["bbox"][key]) <= 1, (name, key)
    assert alone["bus"] != alone["zidane"]


async def test_without_a_fallback_the_analysis_answers_503(
    aiohttp_client: Any, make_settings: Any, bus_jpg: bytes
) -> None:
    (port,) = free_ports(1)
    settings = ray_settings(make_settings, port, RAY_DETECTOR_FALLBACK="none")
    client = await aiohttp_client(create_app(settings))

    status, answer = await analyze(client, bus_jpg)

    assert status == 503, answer
    assert "did not answer" in answer["error"]["message"]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def stand_in_ingress(
    detector: Detector,
    calls: list[str],
    *,
    down: bool = False,
    describe: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> web.Application:
    """The Serve ingress' /classes, /detect and /enrich, answered by ``detector`` in process
    (``down``: every route answers 504 as the ingress does when its stage's host is gone;
    ``describe``: what /classes answers, when it answers)."""

    async def route(request: web.Request) -> web.Response:
        name = request.match_info["route"]
        calls.append(name)
        if down:
            return web.json_response(
                {"error": {"code": "stage_unavailable", "message": "detector did not answer"}},
                status=504,
            )
        if name == "classes" and describe is not None:
            return web.json_response(await describe())
        if name == "classes":
            return web.json_response({"classes": list(detector.class_names), "model": "cluster"})
        with np.load(io.BytesIO(await request.read())) as loaded:
            arrays = {k: loaded[k] for k in loaded.files}
        if name == "enrich":
            return web.json_response({"results": {}, "skipped": {}, "missing_stages": []})
        images = [arrays[str(i)] for i in range(len(arrays))]
        found = detector.detect_batch(images)
        return web.json_response(
            {
                "results": [
                    {"detections": [detection_row(d) for d in boxes], "model": "cluster"}
                    for boxes in found
                ]
            },
            dumps=lambda o: json.dumps(o, default=float),
        )

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/vigil/{route}", route)
    return app


async def test_full_answers_return_when_the_host_comes_back(
    aiohttp_client: Any, make_settings: Any, bus_jpg: bytes, darknet_detector: Detector
) -> None:
    (port,) = free_ports(1)
    settings = ray_settings(make_settings, port, RAY_RETRY_S="0.1")
    client = await aiohttp_client(create_app(settings))
    _status, event = await analyze(client, bus_jpg)
    assert event["missing_stages"] == ["detector", "zoo"]

    calls: list[str] = []
    server = TestServer(stand_in_ingress(darknet_detector, calls), port=port)
    await server.start_server()  # the host is back
    try:

        async def full() -> bool:
            status, found = await analyze(client, bus_jpg)
            assert status == 200, found
            return found["degraded"] is False

        await until(full, "a full answer after the retry interval (0.1 s)")
        _status, event = await analyze(client, bus_jpg)
        assert event["model"] == "cluster" and event["missing_stages"] == []
        assert event["counts"]["person"] >= 3
        assert "detect" in calls
        assert await stages_down(client) == []
    finally:
        await server.close()


async def test_a_known_down_stage_is_not_asked_again_before_the_retry_interval(
    aiohttp_client: Any, make_settings: Any, bus_jpg: bytes, darknet_detector: Detector
) -> None:
    calls: list[str] = []
    server = TestServer(stand_in_ingress(darknet_detector, calls, down=True))
    await server.start_server()
    try:
        settings = ray_settings(make_settings, server.port or 0, RAY_RETRY_S="3600")
        client = await aiohttp_client(create_app(settings))
        for _ in range(3):
            status, event = await analyze(client, bus_jpg, use_llm="false")
            assert status == 200, event
            assert event["missing_stages"][0] == "detector"
        # /classes at start-up failed: the detector went to its fallback and has not asked
        # the cluster since (three analyses, one retry interval of an hour).
        assert calls.count("detect") == 0
        assert calls.count("classes") == 1
    finally:
        await server.close()


async def test_a_failed_ray_llm_stage_is_named_in_the_refined_event(
    aiohttp_client: Any,
    make_settings: Any,
    counting_detector: CountingDetector,
    bus_jpg: bytes,
) -> None:
    (port,) = free_ports(1)  # the Serve application (its LLM stage) is gone
    settings = make_settings(
        {
            "server": {"api_token": TOKEN},
            "detector": {"warmup": False},
            "llm": {"mode": "ray"},
            "reasoning": {"llm_policy": "always"},
        },
        RAY_SERVE_URL=f"http://127.0.0.1:{port}/vigil",
    )
    client = await aiohttp_client(create_app(settings, detector=counting_detector))

    status, first = await analyze(client, bus_jpg)
    assert status == 200, first
    assert (first["revision"], first["llm_status"]) == (1, "pending")
    assert first["degraded"] is False and first["missing_stages"] == []

    refined: dict[str, Any] = {}

    async def fetch() -> dict[str, Any]:
        resp = await client.get(f"/v1/events/{first['id']}", headers=AUTH)
        found: dict[str, Any] = await resp.json()
        return found

    async def is_refined() -> bool:
        refined.update(await fetch())
        return bool(refined["revision"] == 2)

    await until(is_refined, "revision 2")
    assert refined["llm_status"] == "failed"
    assert refined["degraded"] is True
    assert refined["missing_stages"] == ["llm"]
    assert "connection" in refined["llm_error"]
    assert await stages_down(client) == ["llm"]
    health = await (await client.get("/health")).json()
    assert health["llm"]["mode"] == "ray"


def test_the_fallback_batch_names_its_model_per_image(darknet_detector: Detector) -> None:
    """The marker survives a batch: each image's list names the stand-in model."""
    from addon_server.config import parse
    from addon_server.detector import load_detector

    (port,) = free_ports(1)
    settings = parse(
        {"detector": {"backend": "ray"}, "ray": {"serve_url": f"http://127.0.0.1:{port}"}},
        environ={},
    ).detector
    detector = load_detector(settings, "cpu")
    try:
        found = detector.detect_batch([np.zeros((64, 64, 3), dtype=np.uint8)] * 2)
        assert [getattr(f, "missing_stages", None) for f in found] == [("detector",)] * 2
        assert [getattr(f, "model", None) for f in found] == [EMBEDDED_MODEL_NAME] * 2
        assert detector.memory_bytes() > 0  # the fallback's weights, in this process
    finally:
        detector.close()


async def test_a_retry_probes_the_stage_briefly_and_takes_back_its_classes(
    darknet_detector: Detector,
) -> None:
    """A retry that finds the stage hung costs the short ``/classes`` probe, not the stage
    timeout; when the stage answers, the cluster's model name and classes replace the ones
    the add-on started on (its fallback's)."""
    from addon_server.config import parse
    from addon_server.detector import load_detector
    from addon_server.detector.base import FallbackDetections
    from addon_server.ray_serve.client import PROBE_TIMEOUT_S

    stage_timeout_s = 300.0  # what a retry without the probe would wait on a hung stage
    (port,) = free_ports(1)  # nothing listens at start: the add-on starts on its fallback
    settings = parse(
        {
            "detector": {"backend": "ray"},
            "ray": {
                "serve_url": f"http://127.0.0.1:{port}/vigil",
                "retry_s": 0.1,
                "detector_timeout_s": stage_timeout_s,
            },
        },
        environ={},
    ).detector
    detector = load_detector(settings, "cpu")
    assert detector.name == EMBEDDED_MODEL_NAME and "raccoon" not in detector.class_names

    calls: list[str] = []
    released = asyncio.Event()

    async def hung_until_released() -> dict[str, Any]:
        await released.wait()
        return {"classes": [*darknet_detector.class_names, "raccoon"], "model": "cluster"}

    cluster = stand_in_ingress(darknet_detector, calls, describe=hung_until_released)
    server = TestServer(cluster, port=port)
    await server.start_server()  # the ingress is back, its detector stage hangs
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    try:
        await asyncio.sleep(0.2)  # past retry_s: the next batch retries
        started = time.monotonic()
        found = await asyncio.to_thread(detector.detect_batch, [image])
        waited = time.monotonic() - started
        assert isinstance(found[0], FallbackDetections)
        assert calls == ["classes"]  # probed, and /detect not sent to a stage that hangs
        assert PROBE_TIMEOUT_S <= waited < stage_timeout_s

        released.set()  # the stage answers again
        await asyncio.sleep(0.2)
        found = await asyncio.to_thread(detector.detect_batch, [image])
        assert not isinstance(found[0], FallbackDetections)
        assert calls[-2:] == ["classes", "detect"]
        assert detector.name == "cluster" and "raccoon" in detector.class_names
    finally:
        released.set()
        await server.close()
        detector.close()
