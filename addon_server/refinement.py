"""Phase 2 of an event: the LLM refines the rule verdict in the background.

The analysis answers as soon as the rules are done (revision 1, ``phase: "initial"``,
``llm_status: "pending"`` when :mod:`~addon_server.reasoning.gate` asks the LLM). The
:class:`Refiner` then asks the LLM and stores revision 2 of the same event
(``phase: "refined"``, ``llm_status: "done"`` or ``"failed"``); the store hands each revision
to the event stream. Its queue is bounded (an event that finds it full is refined as
``failed`` at once, with the reason), and nothing stays ``pending`` forever: whatever the
add-on could not finish when it stopped is marked ``failed`` at shutdown, and anything a
crash left pending is marked ``failed`` at the next start.

This module owns the event's risk fields (:func:`risk_fields`) so both revisions are written
by one function.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from addon_server import tracing
from addon_server.reasoning.context import SceneContext
from addon_server.reasoning.levels import LEVEL_RANK, RiskLevel
from addon_server.reasoning.reasoner import Reasoner, RuleVerdict
from addon_server.reasoning.risk import Assessment, LLMStatus
from addon_server.store import EventStore, StorageError

_LOGGER = logging.getLogger(__name__)

MAX_QUEUE = 64
"""Events waiting for the LLM at most; a CPU model takes seconds each, so more would only wait
minutes for an answer nobody is still looking at."""

RESTARTED = "the add-on restarted before the LLM refined this event"
STOPPED = "the add-on stopped before the LLM refined this event"
QUEUE_FULL = f"{MAX_QUEUE} events were already waiting for the LLM"


class Phase(StrEnum):
    """Which revision of an event a document is."""

    INITIAL = "initial"
    REFINED = "refined"


class EventLLMStatus(StrEnum):
    """The event's ``llm_status``: where the LLM's part of it stands."""

    PENDING = "pending"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


_FROM_ASSESSMENT = {
    LLMStatus.OK: EventLLMStatus.DONE,
    LLMStatus.FALLBACK: EventLLMStatus.FAILED,
    LLMStatus.DISABLED: EventLLMStatus.SKIPPED,
}


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def risk_fields(
    assessment: Assessment,
    status: EventLLMStatus,
    notify_level: RiskLevel,
    *,
    revision: int,
    llm_error: str | None = None,
) -> dict[str, Any]:
    """The fields of an event document one revision sets (score, level, words, LLM state)."""
    return {
        **assessment.as_json(),
        "llm_status": str(status),
        "rule_score": assessment.rule_score,
        "llm_score": assessment.llm_score,
        "llm_error": llm_error or assessment.llm_error,
        "notify": LEVEL_RANK[str(assessment.risk_level)] >= LEVEL_RANK[str(notify_level)],
        "revision": revision,
        "phase": str(Phase.INITIAL if revision == 1 else Phase.REFINED),
        "updated_at": now_iso(),
    }


@dataclass(frozen=True, slots=True, eq=False)  # by identity: the worker's set holds it
class RefineJob:
    """One stored initial event waiting for the LLM, with what the LLM needs to see."""

    document: Mapping[str, Any]
    context: SceneContext
    verdict: RuleVerdict
    notify_level: RiskLevel
    queued: float = field(default_factory=time.perf_counter)
    trace: dict[str, str] = field(default_factory=tracing.inject)
    """The analysis' trace context: the worker's LLM call joins the request's trace."""


def _failed(document: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """Revision 2 of an event the LLM will not refine: the rules' verdict stands."""
    return {
        **document,
        "llm_status": str(EventLLMStatus.FAILED),
        "llm_error": reason,
        "revision": 2,
        "phase": str(Phase.REFINED),
        "updated_at": now_iso(),
    }


class Refiner:
    """Owns the background refinement: a bounded queue and ``workers`` tasks draining it."""

    def __init__(
        self, reasoner: Reasoner, store: EventStore, *, max_queue: int = MAX_QUEUE, workers: int = 1
    ) -> None:
        self.reasoner = reasoner
        self.store = store
        self.workers = workers
        self._queue: asyncio.Queue[RefineJob] = asyncio.Queue(max_queue)
        self._tasks: list[asyncio.Task[None]] = []
        self._running: set[RefineJob] = set()
        self._stopping = False

    @property
    def waiting(self) -> int:
        return self._queue.qsize() + len(self._running)

    async def start(self) -> None:
        """Mark what an earlier run left pending as failed, then start the workers."""
        self._stopping = False
        for document in await self.store.pending_events():
            await self._store(_failed(document, RESTARTED))
        self._tasks = [
            asyncio.create_task(self._work(), name=f"vigil-refine-{n}") for n in range(self.workers)
        ]

    async def stop(self) -> None:
        """Cancel the workers and mark every unfinished refinement failed (while the store is
        still open: the app stops this before the store)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        unfinished = list(self._running)
        for _ in unfinished:
            self._queue.task_done()
        self._running.clear()
        while not self._queue.empty():
            unfinished.append(self._queue.get_nowait())
            self._queue.task_done()
        for job in unfinished:
            await self._store(_failed(job.document, STOPPED))

    async def submit(self, job: RefineJob) -> None:
        """Queue ``job``; when the queue is full (or the add-on is stopping) store the event's
        refinement as failed at once, so its ``pending`` never outlives this call's reason."""
        if self._stopping:
            await self._store(_failed(job.document, STOPPED))
            return
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            await self._store(_failed(job.document, QUEUE_FULL))

    async def join(self) -> None:
        """Wait until every queued refinement is stored (tests and benchmarks)."""
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            self._running.add(job)
            try:
                await self._refine(job)
            except Exception as exc:  # a bug must not leave the event pending
                _LOGGER.exception("refinement of %s failed", job.document["id"])
                await self._store(_failed(job.document, f"internal: {exc!r}"))
            # A cancel (stop) skips these: the job stays in _running and stop() fails it.
            self._running.discard(job)
            self._queue.task_done()

    async def _refine(self, job: RefineJob) -> None:
        waited = (time.perf_counter() - job.queued) * 1000
        with tracing.extract(job.trace), tracing.span("refine"):
            assessment = await self.reasoner.refine(job.context, job.verdict)
        document = dict(job.document)
        document.update(
            risk_fields(
                assessment,
                _FROM_ASSESSMENT[assessment.llm_status],
                job.notify_level,
                revision=2,
            )
        )
        if assessment.missing_stages:  # the LLM's stage was down: degraded, as revision 1 is
            stages = (*document.get("missing_stages", ()), *assessment.missing_stages)
            document["missing_stages"] = list(dict.fromkeys(stages))
            document["degraded"] = True
        timings = dict(document.get("timings_ms") or {})
        timings["refine_queue"] = waited
        timings["reason_llm"] = (assessment.timings_ms or {}).get("llm", 0.0)
        document["timings_ms"] = timings
        await self._store(document)

    async def _store(self, document: dict[str, Any]) -> None:
        """Commit a revision; a disk that refuses it is logged (the store reports it)."""
        with contextlib.suppress(StorageError):
            if await self.store.add_revision(document) is None:
                _LOGGER.info("event %s is gone or already refined", document["id"])
