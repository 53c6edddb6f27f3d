"""A hypothesis state machine over the zoo manager: leases held across steps, waiters left
pending and cancelled, injected load failures and OOMs, pins, unloads and idle timeouts.

After every step: the ledger never passes the budget, no model in use is ever unloaded, no
CRITICAL model is evicted, every reference belongs to a lease or a pending request; at the end,
with everything released, every refcount is back to zero and no waiter is left.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from addon_server.metrics import Metrics
from addon_server.zoo.interface import ModelLoadError, ModelState, Priority, ZooBusyError
from addon_server.zoo.manager import Lease, ZooManager
from tests.addon_server.zoo.ballast import MB, DeclaredProbe, Faults, spec

MODELS = {
    "crit": (3, Priority.CRITICAL),
    "high": (4, Priority.HIGH),
    "med1": (3, Priority.MEDIUM),
    "med2": (5, Priority.MEDIUM),
    "low1": (2, Priority.LOW),
    "low2": (4, Priority.LOW),
    "brief": (2, Priority.LOW),
}
"""name → (MB, priority); 23 MB in all on a 9 MB budget: about a third fits."""
BUDGET_MB = 9
NAMES = st.sampled_from(sorted(MODELS))


class ZooMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.faults = Faults()
        specs = [
            spec(
                name,
                size * MB,
                priority,
                self.faults,
                idle_ttl_s=0.01 if name == "brief" else 300.0,
            )
            for name, (size, priority) in MODELS.items()
        ]
        self.zoo = ZooManager(
            "cpu",
            specs,
            budget_bytes=BUDGET_MB * MB,
            models_dir=Path("/nonexistent"),
            probe=DeclaredProbe(),
            metrics=Metrics(),
            margins=(1.0, 1.0),
        )
        self.leases: list[Lease] = []
        self.pending: list[asyncio.Task[Lease]] = []

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def release_lease(self, lease: Lease) -> None:
        """Release on the loop, as a request handler does."""

        async def release() -> None:
            lease.release()

        self.run(release())

    def settle(self, seconds: float = 0.0) -> None:
        """Let the loop run: loads and unloads finish, granted waiters resume."""
        self.run(asyncio.sleep(seconds))
        for _ in range(3):
            self.run(asyncio.sleep(0.002))
        still = []
        for task in self.pending:
            if not task.done():
                still.append(task)
            elif not task.cancelled() and task.exception() is None:
                self.leases.append(task.result())
        self.pending = still

    @rule(name=NAMES)
    def acquire(self, name: str) -> None:
        with contextlib.suppress(ZooBusyError, ModelLoadError):
            self.leases.append(self.run(self.zoo.acquire(name, deadline_s=0.02)))
        self.settle()

    @rule(name=NAMES)
    def wait_for(self, name: str) -> None:
        """A request that stays queued across steps (until admitted, cancelled or timed out)."""
        task = self.loop.create_task(self.zoo.acquire(name, deadline_s=0.5))
        self.pending.append(task)
        self.settle()

    @precondition(lambda self: self.pending)
    @rule(index=st.integers(min_value=0, max_value=20))
    def cancel_waiter(self, index: int) -> None:
        self.pending[index % len(self.pending)].cancel()
        self.settle()

    @precondition(lambda self: self.leases)
    @rule(index=st.integers(min_value=0, max_value=20))
    def release(self, index: int) -> None:
        self.release_lease(self.leases.pop(index % len(self.leases)))
        self.settle()

    @rule(name=NAMES)
    def fail_next_load(self, name: str) -> None:
        self.faults.fail.add(name)

    @rule(name=NAMES)
    def oom_next_load(self, name: str) -> None:
        self.faults.oom.add(name)

    @rule(name=NAMES, pin=st.booleans())
    def pin(self, name: str, pin: bool) -> None:
        try:
            self.run(self.zoo.load(name, pin=pin, deadline_s=0.02))
        except (ZooBusyError, ModelLoadError):
            self.zoo.entry(name).pinned = False  # a pin that could not load holds nothing
        self.settle()

    @rule(name=NAMES)
    def unload(self, name: str) -> None:
        self.run(self.zoo.unload(name))
        self.settle()

    @rule()
    def idle(self) -> None:
        self.settle(0.03)  # past "brief"'s idle timeout

    @invariant()
    def budget_holds(self) -> None:
        assert self.zoo.accounted_bytes() <= self.zoo.budget_bytes
        assert self.zoo.overruns == 0

    @invariant()
    def nothing_in_use_is_unloaded(self) -> None:
        assert self.zoo.in_use_evictions == 0
        for lease in self.leases:
            entry = self.zoo.entry(lease.name)
            assert entry.state is ModelState.LOADED, f"{lease.name} held but {entry.state}"
            assert entry.model is lease.model

    @invariant()
    def critical_is_never_evicted(self) -> None:
        assert self.zoo.entry("crit").evictions == 0

    @invariant()
    def references_belong_to_someone(self) -> None:
        held = dict.fromkeys(MODELS, 0)
        for lease in self.leases:
            held[lease.name] += 1
        waiting = len(self.pending)
        for name, entry in self.zoo.entries.items():
            assert held[name] <= entry.refcount <= held[name] + waiting

    def teardown(self) -> None:
        try:
            for lease in self.leases:
                self.release_lease(lease)
            for task in self.pending:
                task.cancel()
            self.settle(0.05)
            for lease in self.leases:
                self.release_lease(lease)  # any granted while settling (release is idempotent)
            self.settle()
            assert all(e.refcount == 0 for e in self.zoo.entries.values())
            assert not [w for w in self.zoo._waiters if not w.future.done()]
            assert self.zoo.accounted_bytes() <= self.zoo.budget_bytes
            self.run(self.zoo.close())
        finally:
            self.loop.close()


ZooMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_zoo_state_machine = ZooMachine.TestCase
