"""A hypothesis state machine over the zoo manager: leases held across steps, waiters left
pending, cancelled or given up at their deadline, injected load failures and OOMs (once and
twice), an under-estimated model, pins, unloads and idle timeouts on a fake clock.

Each rule ends by letting the manager finish everything it started (loads, unloads, granted
waiters resuming), so the outcome of a sequence does not depend on how busy the machine is and
the invariants are checked on a settled ledger:

- the ledger never passes the budget, and the only overshoots counted are an under-estimated
  model's first measurements (which the manager then corrects);
- no model held by a lease is ever unloaded, closed or swapped;
- no CRITICAL model is ever evicted; an eviction mark on a loaded model means someone holds it;
- every reference belongs to a lease the machine holds; an idle, unpinned model has its idle
  timer armed;
- no request waits that could be served: the first queued request can neither fit nor evict.

At the end, with everything released and every waiter cancelled, every refcount is zero and no
waiter is left.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from addon_server.errors import ModelNotInstalledError
from addon_server.metrics import Metrics
from addon_server.zoo.interface import ModelLoadError, ModelState, Priority, ZooBusyError
from addon_server.zoo.manager import Lease, ZooManager
from addon_server.zoo.policy import Candidate, choose_victims
from tests.addon_server.zoo.ballast import MB, Ballast, DeclaredProbe, Faults, spec

T = TypeVar("T")
REFUSALS = (ZooBusyError, ModelLoadError, ModelNotInstalledError)

MODELS = {
    "crit": (3, Priority.CRITICAL),
    "high": (4, Priority.HIGH),
    "med1": (3, Priority.MEDIUM),
    "med2": (5, Priority.MEDIUM),
    "big": (8, Priority.MEDIUM),
    "low1": (2, Priority.LOW),
    "low2": (4, Priority.LOW),
    "under": (4, Priority.LOW),
}
"""name → (MB, priority); 33 MB in all on an 11 MB budget: about a third fits (admission adds the
manager's own margins on top)."""
UNDER_ESTIMATE_MB = 2
""""under" holds 4 MB but is registered at 2: its first loads overshoot what was held for it."""
BUDGET_MB = 11
SHORT_TTL = 0.01
"""Idle TTL (seconds of the fake clock, and of the real loop timer that re-checks it) of the
models that idle out; the others keep the seeds' 300 s and never do within a run."""
NAMES = st.sampled_from(sorted(MODELS))
WAIT_S = 60.0
"""A queued request's deadline: far beyond a run, so it leaves the queue only by admission or
cancellation, never by the speed of the machine."""


@dataclass
class Pending:
    """A request the machine left queued across steps."""

    name: str
    task: asyncio.Task[Lease]


class ZooMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.now = 1000.0
        self.faults = Faults()
        specs = [
            spec(
                name,
                size * MB,
                priority,
                self.faults,
                idle_ttl_s=SHORT_TTL if name in ("low1", "med1", "under") else 300.0,
                estimate=UNDER_ESTIMATE_MB * MB if name == "under" else None,
            )
            for name, (size, priority) in MODELS.items()
        ]
        # The manager's default margins: admission holds a quarter more than the figure.
        self.zoo = ZooManager(
            "cpu",
            specs,
            budget_bytes=BUDGET_MB * MB,
            models_dir=Path("/nonexistent"),
            probe=DeclaredProbe(),
            metrics=Metrics(),
            clock=lambda: self.now,
        )
        self.leases: list[Lease] = []
        self.pending: list[Pending] = []

    # -- driving the loop ---------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _quiesce(self, seconds: float) -> None:
        """Run the loop until the manager has nothing in flight and every request it answered
        has resumed (a load on the loader thread takes a few ms on a busy box)."""
        if seconds:
            await asyncio.sleep(seconds)
        quiet = 0
        for _ in range(5000):
            for _ in range(8):
                await asyncio.sleep(0)
            # Nothing runs off the loop once no load or unload is in flight; the requests
            # they answered resume within a few iterations (and may start new work).
            quiet = 0 if self.zoo._tasks else quiet + 1
            if quiet == 2:
                return
            if self.zoo._tasks:
                await asyncio.sleep(0.001)
        raise AssertionError(f"the manager never settled: {self.zoo._tasks}")

    def settle(self, seconds: float = 0.0) -> None:
        self.run(self._quiesce(seconds))
        still = []
        for pending in self.pending:
            task = pending.task
            if not task.done():
                still.append(pending)
            elif not task.cancelled() and task.exception() is None:
                self.leases.append(task.result())
            elif not task.cancelled():
                assert isinstance(task.exception(), REFUSALS), task.exception()
        self.pending = still

    def call(self, fn: Any, *args: Any) -> Any:
        """Call a synchronous manager method on the loop, as a request handler does."""

        async def inside() -> Any:
            return fn(*args)

        return self.run(inside())

    def request(self, name: str, deadline_s: float = WAIT_S) -> None:
        task = self.loop.create_task(self.zoo.acquire(name, deadline_s=deadline_s))
        self.pending.append(Pending(name, task))

    # -- rules ----------------------------------------------------------------------------------

    @rule(name=NAMES)
    def acquire(self, name: str) -> None:
        """A request: served now, refused with a typed reason, or left queued across steps."""
        self.request(name)
        self.settle()

    @rule(names=st.lists(NAMES, min_size=2, max_size=4))
    def burst(self, names: list[str]) -> None:
        """Requests that arrive together: those for one model share its load."""
        for name in names:
            self.request(name)
        self.settle()

    @rule(name=NAMES)
    def acquire_now(self, name: str) -> None:
        """A request with no time to wait: served only if its model is loaded; a load it
        started goes on for nobody (a deadline that ran out while loading). The load is held
        at a gate until the request has given up, so the outcome never depends on a race."""
        self.faults.gate = threading.Event()
        try:
            self.request(name, deadline_s=0.0)
            self.run(asyncio.wait({self.pending[-1].task}))
        finally:
            self.faults.gate.set()
            self.faults.gate = None
        self.settle()

    @rule(index=st.integers(min_value=0, max_value=20))
    def cancel_waiter(self, index: int) -> None:
        if not self.pending:
            return
        self.pending[index % len(self.pending)].task.cancel()
        self.settle()

    @rule(index=st.integers(min_value=0, max_value=20))
    def release(self, index: int) -> None:
        if not self.leases:
            return
        self.call(self.leases.pop(index % len(self.leases)).release)
        self.settle()

    @rule(index=st.integers(min_value=0, max_value=20))
    def release_twice(self, index: int) -> None:
        """A lease released twice drops one reference only."""
        if not self.leases:
            return
        lease = self.leases.pop(index % len(self.leases))
        self.call(lease.release)
        self.call(lease.release)
        self.settle()

    @rule(name=NAMES)
    def fail_next_load(self, name: str) -> None:
        self.faults.fail.add(name)

    @rule(name=NAMES, times=st.sampled_from([1, 2]))
    def oom_next_load(self, name: str, times: int) -> None:
        """Once: the manager evicts idle models and retries. Twice: that request fails."""
        self.faults.oom.add(name)
        if times == 2:
            self.faults.ooms[name] = 1

    @rule(name=NAMES, pin=st.booleans())
    def pin(self, name: str, pin: bool) -> None:
        """Load and pin (or unpin); one that cannot be admitted now gives up."""

        async def start() -> asyncio.Task[Any]:
            return asyncio.ensure_future(self.zoo.load(name, pin=pin, deadline_s=WAIT_S))

        task = self.run(start())
        self.settle()
        if not task.done():
            task.cancel()
            self.settle()
        if not task.cancelled() and task.exception() is not None:
            assert isinstance(task.exception(), REFUSALS), task.exception()

    @rule(names=st.lists(NAMES, min_size=1, max_size=3, unique=True))
    def preload(self, names: list[str]) -> None:
        """Preload loads only what fits beside what is loaded, evicting nothing (unless a load
        runs out of memory, or measures more than its estimate: both evict idle models; and a
        queued request may evict for itself when the queue is looked at again)."""
        loaded = {n for n, e in self.zoo.entries.items() if e.state is ModelState.LOADED}
        faulty = self.faults.oom | {n for n, left in self.faults.ooms.items() if left}
        if self.zoo.entry("under").measured is None:
            faulty.add("under")
        queued = bool(self.pending)
        self.run(self.zoo.preload(names))
        self.settle()
        if not queued and not faulty & set(names):
            for name in loaded:
                assert self.zoo.entry(name).state is ModelState.LOADED, name

    @rule(name=NAMES)
    def unload(self, name: str) -> None:
        self.run(asyncio.wait_for(self.zoo.unload(name), 10))
        self.settle()

    @rule(seconds=st.sampled_from([SHORT_TTL / 2, 1.0]))
    def idle(self, seconds: float) -> None:
        """Time passes on the fake clock; the real idle timers (due within SHORT_TTL) re-check
        it, and unload what has been idle for its TTL."""
        self.now += seconds
        self.settle(SHORT_TTL * 2)

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def budget_holds(self) -> None:
        assert self.zoo.accounted_bytes() <= self.zoo.budget_bytes
        # Only "under"'s first completed load can measure more than was held for it; from then
        # on it is admitted on its measurement.
        assert self.zoo.overruns <= min(1, self.zoo.entry("under").loads)
        for entry in self.zoo.entries.values():
            assert entry.holds_bytes or entry.accounted == 0, entry

    @invariant()
    def nothing_in_use_is_unloaded(self) -> None:
        assert self.zoo.in_use_evictions == 0
        for lease in self.leases:
            entry = self.zoo.entry(lease.name)
            assert entry.state is ModelState.LOADED, f"{lease.name} held but {entry.state}"
            assert entry.model is lease.model
            assert isinstance(lease.model, Ballast) and not lease.model.closed

    @invariant()
    def critical_is_never_evicted(self) -> None:
        assert self.zoo.entry("crit").evictions == 0
        assert self.zoo.metrics is not None
        evicted = self.zoo.metrics.zoo_evictions.labels("crit", "CRITICAL")._value.get()
        assert evicted == 0

    @invariant()
    def references_belong_to_leases(self) -> None:
        held = dict.fromkeys(MODELS, 0)
        for lease in self.leases:
            held[lease.name] += 1
        for name, entry in self.zoo.entries.items():
            assert entry.refcount == held[name], (name, entry.refcount, held[name])

    @invariant()
    def marks_and_timers(self) -> None:
        for name, entry in self.zoo.entries.items():
            if entry.state is not ModelState.LOADED:
                continue
            if entry.evicting:
                assert entry.refcount > 0, f"{name} marked for eviction, idle, still loaded"
            elif entry.refcount == 0 and not entry.pinned:
                assert entry.idle is not None, f"{name} idle with no idle timer"

    @invariant()
    def no_request_waits_that_could_be_served(self) -> None:
        """The queue's rule, as the manager's docstring states it: a request for a loaded
        model never waits; the first blocked request evicts what it may and, if it can be
        served once the models in use are released, holds its bytes back from those behind
        it; every other request is admitted when it fits beside those bytes."""
        zoo = self.zoo
        queue = sorted(w for w in zoo._waiters if not w.future.done())
        assert sorted(w.entry.spec.name for w in queue) == sorted(p.name for p in self.pending)
        freeing = sum(
            e.accounted for e in zoo.entries.values() if e.state is ModelState.LOADED and e.evicting
        )
        reserved: int | None = None
        for waiter in queue:
            entry, priority = waiter.entry, Priority(-waiter.rank)
            name = entry.spec.name
            assert not entry.available, f"{name} is loaded, yet its request waits"
            if entry.evicting and entry.refcount > 0:
                continue  # it reloads once its holders let the marked copy go
            need = min(entry.need, zoo.capacity())
            room = zoo.headroom() - (reserved or 0)
            assert need > room, f"{name} fits ({need} <= {room}) but waits"
            if reserved is not None:
                continue
            if freeing:
                # It counts on models marked while in use; whether it evicts more meanwhile
                # is the manager's choice (it decides again when they are released).
                break
            candidates = [
                Candidate(n, e.spec.priority, e.last_used, e.accounted, e.refcount, e.pinned)
                for n, e in zoo.entries.items()
                if e.state is ModelState.LOADED and not e.evicting
            ]
            shortfall = need - room
            victims = choose_victims(candidates, shortfall, priority)
            assert victims is None, f"{name} waits, yet it could evict {victims}"
            released = [
                Candidate(c.name, c.priority, c.last_used, c.nbytes, 0, c.pinned)
                for c in candidates
            ]
            if choose_victims(released, shortfall, priority) is not None:
                reserved = need

    def teardown(self) -> None:
        try:
            for lease in self.leases:
                self.call(lease.release)
            for pending in self.pending:
                pending.task.cancel()
            self.settle()
            for lease in self.leases:
                self.call(lease.release)  # any granted while settling (release is idempotent)
            self.settle()
            assert all(e.refcount == 0 for e in self.zoo.entries.values())
            assert not [w for w in self.zoo._waiters if not w.future.done()]
            assert self.zoo.accounted_bytes() <= self.zoo.budget_bytes
            self.run(self.zoo.close())
        finally:
            self.loop.close()


ZooMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_zoo_state_machine = ZooMachine.TestCase


CANDIDATES = st.lists(
    st.builds(
        Candidate,
        name=st.text("abcdefgh", min_size=1, max_size=3),
        priority=st.sampled_from(Priority),
        last_used=st.floats(0, 100),
        nbytes=st.integers(1, 50),
        refcount=st.sampled_from([0, 0, 0, 1, 2]),
        pinned=st.sampled_from([False, False, False, True]),
    ),
    max_size=20,
)


@settings(max_examples=300, derandomize=True)
@given(CANDIDATES, st.integers(1, 200), st.sampled_from(Priority))
def test_victims_are_idle_least_important_first_and_no_more_than_needed(
    candidates: list[Candidate], shortfall: int, requester: Priority
) -> None:
    """The eviction rule on its own: only idle, unpinned, non-CRITICAL models no more important
    than the requester; a model goes only if the less important ones could not free the bytes
    alone; the set frees enough and no member of it is spare; None only when nothing can."""
    allowed = [
        c
        for c in candidates
        if c.refcount == 0
        and not c.pinned
        and c.priority is not Priority.CRITICAL
        and c.priority <= requester
    ]
    victims = choose_victims(candidates, shortfall, requester)
    if victims is None:
        assert sum(c.nbytes for c in allowed) < shortfall
        return
    assert all(any(v is c for c in allowed) for v in victims)
    freed = sum(v.nbytes for v in victims)
    assert freed >= shortfall
    for victim in victims:
        assert freed - victim.nbytes < shortfall, f"{victim.name} is not needed"
        less = sum(c.nbytes for c in allowed if c.priority < victim.priority)
        assert less < shortfall, f"{victim.name} goes though less important models suffice"
