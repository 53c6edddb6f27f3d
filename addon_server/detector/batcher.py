"""A Triton-style dynamic batcher in front of one detector.

Concurrent requests wait in a bounded queue; one worker takes the oldest request and keeps
gathering until the batch reaches ``max_batch_size`` (or a preferred size), or until the oldest
request has waited ``max_queue_delay_us``, then runs a single forward pass for all of them in a
worker thread. The event loop stays free, so /health answers while a batch runs. A full queue is
refused at once (the API answers 429 with Retry-After) instead of letting latency grow without
bound — the caller can retry or drop a frame, as a camera pipeline should.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from addon_server import tracing
from addon_server.config import BatchingSettings
from addon_server.detector.base import Detection, Detector
from addon_server.imaging import BGRImage

_LOGGER = logging.getLogger(__name__)


class QueueFullError(Exception):
    """The batcher's queue is full; ``retry_after`` is a hint in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the detection queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class BatcherClosedError(Exception):
    """The batcher was stopped while the request waited."""


@dataclass(slots=True)
class _Request:
    image: BGRImage
    future: asyncio.Future[tuple[list[Detection], int, float]]
    enqueued: float
    trace: dict[str, str] = field(default_factory=dict)
    """The caller's trace context (:func:`addon_server.tracing.inject`; empty when off)."""


@dataclass(slots=True)
class BatcherStats:
    """Counters the tests, /health and /metrics read."""

    requests: int = 0
    batches: int = 0
    images: int = 0
    rejected: int = 0
    last_batch_seconds: float = 0.0
    ewma_batch_seconds: float = 0.0


class DynamicBatcher:
    """Coalesces concurrent ``infer`` calls into batched ``detect_batch`` calls."""

    def __init__(
        self,
        detector: Detector,
        settings: BatchingSettings,
        *,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.detector = detector
        self.max_batch_size = settings.max_batch_size if settings.enabled else 1
        self.max_delay = settings.max_queue_delay_us / 1e6 if settings.enabled else 0.0
        self.preferred = settings.preferred_batch_sizes if settings.enabled else ()
        self.max_queue_size = settings.max_queue_size
        self.stats = BatcherStats()
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._carry: collections.deque[_Request] = collections.deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector")
        self._running = 0

    @property
    def busy(self) -> bool:
        """A forward pass is running or waiting (read from other threads: a plain int)."""
        return self._running > 0 or self.queue_depth > 0

    @property
    def queue_depth(self) -> int:
        return len(self._carry) + (self._queue.qsize() if self._queue is not None else 0)

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue_size)
        self._worker = asyncio.create_task(self._run(), name="vigil-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._queue is not None:
            while self.queue_depth:
                request = self._next_nowait()
                if not request.future.done():
                    request.future.set_exception(BatcherClosedError("the detector is stopping"))
        self._executor.shutdown(wait=True)

    async def infer(self, image: BGRImage) -> tuple[list[Detection], int, float]:
        """Detect in one image: ``(detections, batch size it ran in, forward-pass ms)``."""
        if self._queue is None:
            raise BatcherClosedError("the batcher is not running")
        loop = asyncio.get_running_loop()
        request = _Request(image, loop.create_future(), time.monotonic(), tracing.inject())
        try:
            self._queue.put_nowait(request)
        except asyncio.QueueFull:
            self.stats.rejected += 1
            raise QueueFullError(self._retry_after()) from None
        self.stats.requests += 1
        return await request.future

    def _retry_after(self) -> int:
        per_batch = self.stats.ewma_batch_seconds or 1.0
        batches_ahead = math.ceil(self.max_queue_size / self.max_batch_size)
        return max(1, math.ceil(per_batch * batches_ahead))

    def _batch_full(self, size: int) -> bool:
        return size >= self.max_batch_size or (
            bool(self.preferred) and size in self.preferred and size == max(self.preferred)
        )

    async def _gather(self, first: _Request) -> list[_Request]:
        assert self._queue is not None
        batch = [first]
        deadline = first.enqueued + self.max_delay
        while not self._batch_full(len(batch)):
            try:
                batch.append(self._next_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return self._trim_to_preferred(batch)

    def _trim_to_preferred(self, batch: list[_Request]) -> list[_Request]:
        """Send the largest preferred size when the gathered batch is not one (Triton's rule).

        The requests left over are carried to the front of the next batch, oldest first.
        """
        if not self.preferred or len(batch) in self.preferred:
            return batch
        fitting = [size for size in self.preferred if size <= len(batch)]
        if not fitting:
            return batch
        keep = max(fitting)
        self._carry.extendleft(reversed(batch[keep:]))
        return batch[:keep]

    def _next_nowait(self) -> _Request:
        assert self._queue is not None
        return self._carry.popleft() if self._carry else self._queue.get_nowait()

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = self._carry.popleft() if self._carry else await self._queue.get()
            batch = await self._gather(first)
            live = [r for r in batch if not r.future.done()]  # caller went away
            if not live:
                continue
            started = time.perf_counter()
            self._running += 1
            try:
                results = await loop.run_in_executor(
                    self._executor, self._detect, [r.image for r in live], live[0].trace
                )
            except Exception as err:  # a model failure fails this batch, not the server
                _LOGGER.exception("detector failed on a batch of %d", len(live))
                for request in live:
                    if not request.future.done():
                        request.future.set_exception(err)
                continue
            finally:
                self._running -= 1
            elapsed = time.perf_counter() - started
            self._record(len(live), elapsed)
            for request, detections in zip(live, results, strict=True):
                if not request.future.done():
                    request.future.set_result((detections, len(live), elapsed * 1000))

    def _detect(self, images: list[BGRImage], trace: dict[str, str]) -> list[list[Detection]]:
        """One forward pass, traced in the first caller's trace (a backend's calls join it)."""
        with tracing.extract(trace), tracing.span("detector batch", batch_size=len(images)):
            return self.detector.detect_batch(images)

    def _record(self, size: int, seconds: float) -> None:
        stats = self.stats
        stats.batches += 1
        stats.images += size
        stats.last_batch_seconds = seconds
        stats.ewma_batch_seconds = (
            seconds if stats.batches == 1 else 0.8 * stats.ewma_batch_seconds + 0.2 * seconds
        )
        if self._on_batch is not None:
            self._on_batch(size, seconds)
