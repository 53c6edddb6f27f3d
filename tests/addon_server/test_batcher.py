"""The dynamic batcher coalesces concurrent requests and keeps the event loop free."""

from __future__ import annotations

import asyncio

import pytest

from addon_server.app import create_app
from addon_server.config import parse
from addon_server.detector.batcher import DynamicBatcher, QueueFullError
from addon_server.imaging import decode
from addon_server.services import SERVICES_KEY
from tests.addon_server.conftest import HANG_TIMEOUT_S, CountingDetector, eventually, persons

JPEG = {"Content-Type": "image/jpeg"}
HEALTH_TIMEOUT_S = HANG_TIMEOUT_S / 2
"""Below the held pass's own release (HANG_TIMEOUT_S): /health must answer while it is held."""


async def _client(aiohttp_client, make_settings, detector, **batching):
    settings = make_settings({"detector": {"warmup": False}, "batching": batching})
    return await aiohttp_client(create_app(settings, detector=detector))


def _queue_depth(client) -> int:
    batcher = client.server.app[SERVICES_KEY].detection.batcher
    return int(batcher.queue_depth)


async def _held(counting_detector: CountingDetector) -> None:
    """Wait (a hang guard, not a timing) until the worker is inside a held forward pass."""
    assert await asyncio.to_thread(counting_detector.entered.wait, HANG_TIMEOUT_S)


async def test_concurrent_requests_share_forward_passes(
    aiohttp_client, make_settings, counting_detector: CountingDetector, bus_jpg, zidane_jpg
) -> None:
    client = await _client(
        aiohttp_client,
        make_settings,
        counting_detector,
        max_batch_size=8,
        max_queue_delay_us=300_000,
    )
    images = [bus_jpg if i % 2 == 0 else zidane_jpg for i in range(8)]
    # Hold the first pass until the other seven are queued: how fast they arrive (HTTP, decode)
    # depends on the machine; that queued requests share one pass must not.
    counting_detector.gate.clear()
    pending = [asyncio.ensure_future(client.post("/v1/detect", data=images[0], headers=JPEG))]
    await _held(counting_detector)
    pending += [
        asyncio.ensure_future(client.post("/v1/detect", data=img, headers=JPEG))
        for img in images[1:]
    ]
    await eventually(lambda: _queue_depth(client) == 7, "7 requests queued")
    counting_detector.gate.set()
    responses = await asyncio.gather(*pending)
    bodies = [await r.json() for r in responses]
    assert all(r.status == 200 for r in responses)
    assert counting_detector.calls == [1, 7]  # the seven that waited: one forward pass
    for image, body in zip(images, bodies, strict=True):  # each caller got its own answer
        if image is bus_jpg:
            assert body["image"] == {"width": 810, "height": 1080}
            assert persons(body) >= 3
        else:
            assert body["image"] == {"width": 1280, "height": 720}
            assert persons(body) == 2


async def test_batched_results_equal_single_results(darknet_detector, bus_jpg, zidane_jpg) -> None:
    bus = decode(bus_jpg, max_pixels=10**8).pixels
    zidane = decode(zidane_jpg, max_pixels=10**8).pixels
    together = darknet_detector.detect_batch([bus, zidane, bus])
    alone = [darknet_detector.detect_batch([img])[0] for img in (bus, zidane, bus)]
    for batched, single in zip(together, alone, strict=True):
        assert [d.class_name for d in batched] == [d.class_name for d in single]
        for a, b in zip(batched, single, strict=True):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-3)
            assert abs(a.x - b.x) <= 1 and abs(a.width - b.width) <= 1


async def test_batching_off_runs_one_image_per_pass(
    aiohttp_client, make_settings, counting_detector: CountingDetector, bus_jpg
) -> None:
    client = await _client(aiohttp_client, make_settings, counting_detector, enabled=False)
    responses = await asyncio.gather(
        *(client.post("/v1/detect", data=bus_jpg, headers=JPEG) for _ in range(4))
    )
    assert [r.status for r in responses] == [200] * 4
    assert counting_detector.calls == [1, 1, 1, 1]


async def test_preferred_batch_size_is_dispatched_first(counting_detector, bus_jpg) -> None:
    settings = parse(
        {
            "batching": {
                "max_batch_size": 8,
                "preferred_batch_sizes": [2, 4],
                "max_queue_delay_us": 200_000,
            }
        },
        environ={},
    )
    batcher = DynamicBatcher(counting_detector, settings.batching)
    await batcher.start()
    try:
        image = decode(bus_jpg, max_pixels=10**8).pixels
        counting_detector.gate.clear()
        first = asyncio.ensure_future(batcher.infer(image))  # occupies the worker
        await _held(counting_detector)
        rest = [asyncio.ensure_future(batcher.infer(image)) for _ in range(5)]
        await eventually(lambda: batcher.queue_depth == 5, "5 requests queued")
        counting_detector.gate.set()
        await asyncio.gather(first, *rest)
    finally:
        await batcher.stop()
    # 1 (alone), then 4 (largest preferred size <= 5 queued), then the 1 left over
    assert counting_detector.calls == [1, 4, 1]


async def test_full_queue_answers_429_with_retry_after(
    aiohttp_client, make_settings, counting_detector: CountingDetector, bus_jpg
) -> None:
    client = await _client(
        aiohttp_client,
        make_settings,
        counting_detector,
        max_batch_size=1,
        max_queue_size=2,
        max_queue_delay_us=0,
    )
    counting_detector.gate.clear()  # hold the first forward pass
    first = asyncio.ensure_future(client.post("/v1/detect", data=bus_jpg, headers=JPEG))
    await _held(counting_detector)
    queued = [
        asyncio.ensure_future(client.post("/v1/detect", data=bus_jpg, headers=JPEG))
        for _ in range(2)
    ]
    await eventually(lambda: _queue_depth(client) == 2, "both requests queued")
    refused = await client.post("/v1/detect", data=bus_jpg, headers=JPEG)
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await refused.json())["error"]["code"] == "queue_full"
    # /health answers while the batch is held
    health = await asyncio.wait_for(client.get("/health"), timeout=HEALTH_TIMEOUT_S)
    assert health.status == 200
    assert (await health.json())["batcher"]["queue_depth"] == 2
    counting_detector.gate.set()
    for resp in await asyncio.gather(first, *queued):
        assert resp.status == 200


async def test_health_answers_while_a_batch_runs(
    aiohttp_client, make_settings, counting_detector: CountingDetector, bus_jpg
) -> None:
    client = await _client(aiohttp_client, make_settings, counting_detector)
    counting_detector.gate.clear()
    pending = asyncio.ensure_future(client.post("/v1/detect", data=bus_jpg, headers=JPEG))
    await _held(counting_detector)
    health = await asyncio.wait_for(client.get("/health"), timeout=HEALTH_TIMEOUT_S)
    assert health.status == 200
    assert not pending.done()
    counting_detector.gate.set()
    assert (await pending).status == 200


async def test_queue_full_error_carries_hint(counting_detector, bus_jpg) -> None:
    settings = parse({"batching": {"max_queue_size": 1, "max_batch_size": 1}}, environ={})
    batcher = DynamicBatcher(counting_detector, settings.batching)
    await batcher.start()
    image = decode(bus_jpg, max_pixels=10**8).pixels
    counting_detector.gate.clear()
    try:
        running = asyncio.ensure_future(batcher.infer(image))
        await _held(counting_detector)
        waiting = asyncio.ensure_future(batcher.infer(image))
        await eventually(lambda: batcher.queue_depth == 1, "the second request queued")
        with pytest.raises(QueueFullError) as info:
            await batcher.infer(image)
        assert info.value.retry_after >= 1
        assert batcher.stats.rejected == 1
        counting_detector.gate.set()
        await asyncio.gather(running, waiting)
    finally:
        counting_detector.gate.set()
        await batcher.stop()
