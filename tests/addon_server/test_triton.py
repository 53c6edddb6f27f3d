"""The ``triton`` detector backend against a real Triton server (PyTriton, on loopback).

One PyTriton process serves the embedded yolov3-tiny (``triton_serve``) with dynamic batching
for the whole module; the outage test stops it with SIGTERM and starts it again on the same
ports, so it runs last.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from addon_server.app import create_app
from addon_server.config import parse
from addon_server.detector import load_detector
from addon_server.detector.base import Detection, Detector
from addon_server.detector.triton import TritonDetector
from addon_server.detector.triton_serve import ServerProcess
from tests.addon_server.conftest import (
    HANG_TIMEOUT_S,
    CountingDetector,
    addon_process_env,
    free_ports,
    persons,
)

pytest.importorskip("pytriton", reason="needs nvidia-pytriton (requirements/addon-test.txt)")
pytestmark = pytest.mark.slow
PROTOCOLS = ("grpc", "http")


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    grpc_port, http_port, metrics_port = free_ports(3)
    server = ServerProcess(
        tmp_path_factory.mktemp("pytriton"),
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        env=addon_process_env(),
    )
    server.start()
    try:
        server.wait_ready(HANG_TIMEOUT_S)
        yield server
    finally:
        server.stop()


def triton_document(server: ServerProcess, protocol: str, **triton: Any) -> dict[str, Any]:
    return {
        "detector": {"backend": "triton"},
        "triton": {
            "url": f"127.0.0.1:{server.grpc_port}",
            "http_url": f"127.0.0.1:{server.http_port}",
            "protocol": protocol,
            **triton,
        },
    }


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def iou(a: Detection, b: Detection) -> float:
    ax2, ay2, bx2, by2 = a.x + a.width, a.y + a.height, b.x + b.width, b.y + b.height
    w = max(0, min(ax2, bx2) - max(a.x, b.x))
    h = max(0, min(ay2, by2) - max(a.y, b.y))
    inter = w * h
    return inter / (a.width * a.height + b.width * b.height - inter)


def assert_same_detections(served: list[Detection], local: list[Detection]) -> None:
    """Same classes, and each local box matched by a served box of its class with IoU > 0.9."""
    assert sorted(d.class_name for d in served) == sorted(d.class_name for d in local)
    unmatched = list(served)
    for want in local:
        best = max(
            (d for d in unmatched if d.class_name == want.class_name),
            key=lambda d: iou(d, want),
        )
        assert iou(best, want) > 0.9, (want, best)
        assert best.confidence == pytest.approx(want.confidence, abs=1e-3)
        unmatched.remove(best)


def photo(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_same_detections_as_in_process(
    triton: ServerProcess,
    protocol: str,
    darknet_detector: Detector,
    bus_jpg: bytes,
    zidane_jpg: bytes,
) -> None:
    settings = parse(triton_document(triton, protocol), environ={})
    detector = load_detector(settings.detector, "cpu")
    try:
        assert isinstance(detector, TritonDetector)
        assert detector.class_names == darknet_detector.class_names
        images = [photo(bus_jpg), photo(zidane_jpg)]
        served = detector.detect_batch(images)  # two shapes: one request each
        local = darknet_detector.detect_batch(images)
        for got, want in zip(served, local, strict=True):
            assert sum(d.class_name == "person" for d in want) >= 2
            assert_same_detections(got, want)
        # A batch of one shape goes as one request of two images.
        twice = detector.detect_batch([images[1], images[1]])
        assert_same_detections(twice[0], local[1])
        assert_same_detections(twice[1], local[1])
    finally:
        detector.close()


async def test_detect_api_through_triton(
    aiohttp_client: Any,
    make_settings: Any,
    triton: ServerProcess,
    protocol: str,
    counting_detector: CountingDetector,
    bus_jpg: bytes,
) -> None:
    settings = make_settings(triton_document(triton, protocol, probe_interval_s=0.1))
    client = await aiohttp_client(create_app(settings))
    resp = await client.post("/v1/detect", data=bus_jpg, headers={"Content-Type": "image/jpeg"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["model"] == "vigil_detector"
    local = await aiohttp_client(
        create_app(make_settings({"detector": {"warmup": False}}), detector=counting_detector)
    )
    expected = await (
        await local.post("/v1/detect", data=bus_jpg, headers={"Content-Type": "image/jpeg"})
    ).json()
    assert persons(body) == persons(expected) >= 3
    assert [d["class"] for d in body["detections"]] == [d["class"] for d in expected["detections"]]

    async def statistics() -> dict[str, Any]:
        health = await (await client.get("/health")).json()
        return dict(health["models"][0]["triton"])

    seen: dict[str, Any] = {}

    async def counted() -> bool:
        seen.update(await statistics())
        return bool(seen["statistics"]["inference_count"] > 0)

    await eventually_async(counted, "Triton's statistics count the inference")
    assert seen["protocol"] == protocol and seen["model_ready"] and seen["error"] is None
    assert seen["platform"] and seen["versions"] == ["1"] and seen["max_batch_size"] == 8
    health = await (await client.get("/health")).json()
    assert not [i for i in health["issues"] if i["code"] == "triton_unavailable"]
    assert health["models"][0]["backend"] == "triton"
    metrics = await (await client.get("/metrics")).text()
    assert 'vigil_triton_up{model="vigil_detector"} 1.0' in metrics
    assert 'vigil_triton_inference_count{model="vigil_detector"}' in metrics


async def eventually_async(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    """:func:`eventually` for a predicate that must await (an HTTP call)."""
    deadline = time.monotonic() + HANG_TIMEOUT_S
    while not await predicate():
        assert time.monotonic() < deadline, f"{what}: not within {HANG_TIMEOUT_S:.0f} s"
        await asyncio.sleep(0.05)


async def test_outage_gives_503_and_a_repair_then_recovers(
    aiohttp_client: Any, make_settings: Any, triton: ServerProcess, bus_jpg: bytes
) -> None:
    """Both protocols: Triton stopped → 503 naming it and /health degraded; back → answers."""
    clients = []
    for protocol in PROTOCOLS:
        document = triton_document(
            triton, protocol, probe_interval_s=0.1, max_retries=2, backoff_s=0.01, timeout_s=5
        )
        clients.append(await aiohttp_client(create_app(make_settings(document))))

    async def detect(client: Any) -> Any:
        return await client.post("/v1/detect", data=bus_jpg, headers={"Content-Type": "image/jpeg"})

    for client in clients:
        assert (await detect(client)).status == 200

    triton.stop()
    for client, protocol in zip(clients, PROTOCOLS, strict=True):
        resp = await detect(client)
        assert resp.status == 503
        error = (await resp.json())["error"]
        assert error["code"] == "triton_unavailable"
        port = triton.grpc_port if protocol == "grpc" else triton.http_port
        assert f"Triton server at 127.0.0.1:{port} ({protocol}) is unavailable" in error["message"]
        resp = await client.post(
            "/v1/analyze",
            params={"camera": "front_door"},
            data=bus_jpg,
            headers={"Content-Type": "image/jpeg"},
        )
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "triton_unavailable"
        health = await (await client.get("/health")).json()
        assert health["status"] == "degraded"
        issue = next(i for i in health["issues"] if i["code"] == "triton_unavailable")
        assert issue["severity"] == "warning" and issue["model"] == "vigil_detector"
        assert "Triton server at" in issue["message"]
        assert health["models"][0]["triton"]["model_ready"] is False
        metrics = await (await client.get("/metrics")).text()
        assert 'vigil_triton_up{model="vigil_detector"} 0.0' in metrics

    # An add-on that starts while Triton is down: unhealthy, the same issue and 503 ...
    late = await aiohttp_client(
        create_app(
            make_settings(
                triton_document(triton, "grpc", probe_interval_s=0.1, max_retries=1, backoff_s=0.01)
            )
        )
    )
    health = await (await late.get("/health")).json()
    assert health["status"] == "unhealthy"
    assert [i["code"] for i in health["issues"] if i["code"] == "triton_unavailable"]
    resp = await detect(late)
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "triton_unavailable"
    clients.append(late)  # ... and it too answers once Triton is back, with no restart.

    triton.start()
    triton.wait_ready(HANG_TIMEOUT_S)
    for client in clients:
        # The probe notices the server is back without any request in between.
        async def recovered(client: Any = client) -> bool:
            health = await (await client.get("/health")).json()
            return not any(i["code"] == "triton_unavailable" for i in health["issues"])

        async def answers(client: Any = client) -> bool:
            return bool((await detect(client)).status == 200)

        await eventually_async(recovered, "/health recovers once Triton is back")
        await eventually_async(answers, "/v1/detect answers once Triton is back")
        resp = await detect(client)
        assert resp.status == 200
        assert persons(await resp.json()) >= 3
        health = await (await client.get("/health")).json()
        assert health["status"] != "unhealthy"


def test_config_names_and_selection() -> None:
    """The seeds' env names reach the settings, and TRITON_ENABLED picks the backend."""
    from addon_server.config import ConfigError
    from addon_server.detector import resolve_backend

    env = {
        "TRITON_ENABLED": "true",
        "TRITON_URL": "gpu-host:9001",
        "TRITON_HTTP_URL": "gpu-host:9000",
        "TRITON_PROTOCOL": "HTTP",
        "TRITON_MODEL": "yolo",
        "TRITON_TIMEOUT": "2.5",
        "TRITON_MAX_RETRIES": "5",
        "TRITON_CONFIDENCE_THRESHOLD": "0.3",
    }
    triton = parse({}, environ=env).detector.triton
    assert (triton.enabled, triton.url, triton.http_url, triton.protocol) == (
        True,
        "gpu-host:9001",
        "gpu-host:9000",
        "http",
    )
    assert (triton.model, triton.timeout_s, triton.max_retries) == ("yolo", 2.5, 5)
    assert triton.confidence_threshold == 0.3 and triton.endpoint == "gpu-host:9000"
    assert resolve_backend(parse({}, environ=env).detector) == "triton"
    assert resolve_backend(parse({}, environ={}).detector) == "darknet"
    with pytest.raises(ConfigError, match=r"triton\.protocol"):
        parse({}, environ={"TRITON_PROTOCOL": "udp"})
    with pytest.raises(ConfigError, match=r"triton\.enabled: conflicts"):
        parse({"detector": {"backend": "darknet"}}, environ={"TRITON_ENABLED": "1"})


def test_unreachable_at_startup_is_reported() -> None:
    """No server at all: loading fails with the server named (the service reports it)."""
    from addon_server.errors import TritonUnavailableError

    (port,) = free_ports(1)
    settings = parse(
        {
            "detector": {"backend": "triton"},
            "triton": {"url": f"127.0.0.1:{port}", "max_retries": 1, "backoff_s": 0.01},
        },
        environ={},
    )
    with pytest.raises(TritonUnavailableError, match=f"127.0.0.1:{port} \\(grpc\\)"):
        load_detector(settings.detector, "cpu")
