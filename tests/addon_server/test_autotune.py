"""Batch-size autotune: fill batches where they pay (GPU-like), not where they don't (CPU).

The cost models run on a virtual clock that the stand-in detector advances: the decision is
tested on exact costs, not on how precisely a busy machine keeps a ``time.sleep``. The real
detector is timed for real in its own test.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import pytest

from addon_server.app import create_app
from addon_server.detector import autotune
from addon_server.detector.autotune import best_batch_size, candidate_sizes
from addon_server.detector.base import Detection


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """The clock the autotune reads, advanced only by the stand-in detector's cost model."""
    virtual = VirtualClock()
    monkeypatch.setattr(autotune, "time", SimpleNamespace(perf_counter=virtual.perf_counter))
    return virtual


class TimedDetector:
    """A stand-in with a known cost model: the GPU this machine lacks, or a CPU-like one."""

    name = "timed"
    backend = "test"
    device = "cuda:0"
    class_names = ("person",)

    def __init__(self, clock: VirtualClock, per_call_ms: float, per_image_ms: float) -> None:
        self.clock = clock
        self.per_call = per_call_ms / 1000
        self.per_image = per_image_ms / 1000

    def detect_batch(self, images: Sequence[object]) -> list[list[Detection]]:
        self.clock.now += self.per_call + self.per_image * len(images)
        return [[] for _ in images]

    def memory_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass


def test_candidate_sizes() -> None:
    assert candidate_sizes(8) == [1, 2, 4, 8]
    assert candidate_sizes(6) == [1, 2, 4, 6]
    assert candidate_sizes(1) == [1]


def test_gpu_like_cost_fills_the_batch(clock: VirtualClock) -> None:
    result = best_batch_size(TimedDetector(clock, per_call_ms=40, per_image_ms=2), 8)
    assert result.batch_size == 8
    assert result.ms_per_image == pytest.approx({1: 42, 2: 22, 4: 12, 8: 7})


def test_cpu_like_cost_keeps_batches_of_one(clock: VirtualClock) -> None:
    result = best_batch_size(TimedDetector(clock, per_call_ms=0, per_image_ms=20), 8)
    assert result.batch_size == 1
    assert result.ms_per_image == pytest.approx({1: 20, 2: 20, 4: 20, 8: 20})


def test_real_detector_is_timed_at_every_size(darknet_detector) -> None:
    result = best_batch_size(darknet_detector, 4, frame_shape=(240, 320), rounds=1)
    assert set(result.ms_per_image) == {1, 2, 4}
    assert all(ms > 0 for ms in result.ms_per_image.values())
    assert result.batch_size in {1, 2, 4}


async def test_startup_autotune_caps_the_batcher(
    aiohttp_client, make_settings, clock: VirtualClock
) -> None:
    settings = make_settings({"detector": {"warmup": True}, "batching": {"max_batch_size": 8}})
    gpu_like = await aiohttp_client(
        create_app(settings, detector=TimedDetector(clock, per_call_ms=40, per_image_ms=2))
    )
    batcher = (await (await gpu_like.get("/health")).json())["batcher"]
    assert batcher["max_batch_size"] == 8
    assert set(batcher["autotune_ms_per_image"]) == {"1", "2", "4", "8"}
    cpu_like = await aiohttp_client(
        create_app(settings, detector=TimedDetector(clock, per_call_ms=0, per_image_ms=20))
    )
    assert (await (await cpu_like.get("/health")).json())["batcher"]["max_batch_size"] == 1
