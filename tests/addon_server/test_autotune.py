"""Batch-size autotune: fill batches where they pay (GPU-like), not where they don't (CPU)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from addon_server.app import create_app
from addon_server.detector.autotune import best_batch_size, candidate_sizes
from addon_server.detector.base import Detection


class TimedDetector:
    """A stand-in with a known cost model: the GPU this machine lacks, or a CPU-like one."""

    name = "timed"
    backend = "test"
    device = "cuda:0"
    class_names = ("person",)

    def __init__(self, per_call_ms: float, per_image_ms: float) -> None:
        self.per_call = per_call_ms / 1000
        self.per_image = per_image_ms / 1000

    def detect_batch(self, images: Sequence[object]) -> list[list[Detection]]:
        time.sleep(self.per_call + self.per_image * len(images))
        return [[] for _ in images]

    def memory_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass


def test_candidate_sizes() -> None:
    assert candidate_sizes(8) == [1, 2, 4, 8]
    assert candidate_sizes(6) == [1, 2, 4, 6]
    assert candidate_sizes(1) == [1]


def test_gpu_like_cost_fills_the_batch() -> None:
    result = best_batch_size(TimedDetector(per_call_ms=40, per_image_ms=2), 8)
    assert result.batch_size == 8
    assert result.ms_per_image[8] < result.ms_per_image[1] / 3


def test_cpu_like_cost_keeps_batches_of_one() -> None:
    result = best_batch_size(TimedDetector(per_call_ms=0, per_image_ms=20), 8)
    assert result.batch_size == 1


def test_real_detector_is_timed_at_every_size(darknet_detector) -> None:
    result = best_batch_size(darknet_detector, 4, frame_shape=(240, 320), rounds=1)
    assert set(result.ms_per_image) == {1, 2, 4}
    assert all(ms > 0 for ms in result.ms_per_image.values())
    assert result.batch_size in {1, 2, 4}


async def test_startup_autotune_caps_the_batcher(aiohttp_client, make_settings) -> None:
    settings = make_settings({"detector": {"warmup": True}, "batching": {"max_batch_size": 8}})
    gpu_like = await aiohttp_client(
        create_app(settings, detector=TimedDetector(per_call_ms=40, per_image_ms=2))
    )
    batcher = (await (await gpu_like.get("/health")).json())["batcher"]
    assert batcher["max_batch_size"] == 8
    assert set(batcher["autotune_ms_per_image"]) == {"1", "2", "4", "8"}
    cpu_like = await aiohttp_client(
        create_app(settings, detector=TimedDetector(per_call_ms=0, per_image_ms=20))
    )
    assert (await (await cpu_like.get("/health")).json())["batcher"]["max_batch_size"] == 1
