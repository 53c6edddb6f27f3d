"""Pick the batch size that actually pays on this device, at startup.

Triton leaves batch sizes to an offline model analyzer; a homelab add-on has to find out for
itself. On a GPU, images per second grow with the batch, so the batcher should fill it. On a
CPU, OpenCV DNN's cost per image is flat or slightly worse with bigger batches (measured here:
7.7 img/s at batch 1 vs 7.0 at batch 8 on bus.jpg), so waiting to build a batch only adds
latency. :func:`best_batch_size` times synthetic frames at the power-of-two sizes up to the
configured maximum and returns the smallest size whose cost per image is within ``tolerance``
of the best one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from addon_server.detector.base import Detector

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TuneResult:
    batch_size: int
    ms_per_image: dict[int, float]


def candidate_sizes(max_batch_size: int) -> list[int]:
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch_size)
    return sizes


def best_batch_size(
    detector: Detector,
    max_batch_size: int,
    *,
    frame_shape: tuple[int, int] = (480, 640),
    rounds: int = 2,
    tolerance: float = 0.1,
) -> TuneResult:
    """Time ``rounds`` interleaved passes per size (blocking) and choose a batch size."""
    sizes = candidate_sizes(max_batch_size)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (*frame_shape, 3), dtype=np.uint8)
    detector.detect_batch([frame])  # first-call allocations are not a batch-size effect
    best: dict[int, float] = {}
    for _ in range(rounds):  # interleaved, so a drifting CPU clock hits every size alike
        for size in sizes:
            started = time.perf_counter()
            detector.detect_batch([frame] * size)
            per_image = (time.perf_counter() - started) * 1000 / size
            best[size] = min(best.get(size, per_image), per_image)
    fastest = min(best.values())
    chosen = next(size for size in sizes if best[size] <= fastest * (1 + tolerance))
    _LOGGER.info(
        "batch autotune on %s: %s ms/image -> max batch %d",
        detector.device,
        {size: round(ms, 1) for size, ms in best.items()},
        chosen,
    )
    return TuneResult(chosen, best)
