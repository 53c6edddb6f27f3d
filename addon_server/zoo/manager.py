"""One device's zoo: a byte budget that holds, and models that are never pulled from under a call.

The rules, each learned from a serving stack whose users hit the opposite:

- **Estimate → measure → correct.** Admission accounts the spec's estimate (or the last
  measurement); after load plus one warm-up inference the measured bytes replace it and the
  error is exported. If the measurement overshoots the budget, idle models are evicted to make
  up for it; if none can be, the new model is refused and unloaded (never left over budget).
- **Refcount from admission.** A request holds its model from the moment it is admitted, before
  the load finishes, so nothing can evict it between load and use (llama.cpp's router evicted a
  model before its own request ran). Victims are chosen only among models at refcount 0
  (``policy.py``); an eviction mark is sticky, and an unloading model's bytes stay accounted
  until the unload has finished.
- **Admission waits in a priority queue with a deadline**, then fails with a typed
  :class:`ZooBusyError`; a request that gives up (deadline, client gone) is taken out of the
  queue or, if it was admitted meanwhile, its reference is dropped — so a cancellation can never
  leave a model held or the queue stuck (Ollama's scheduler hung 5.5 h on exactly that).
- **Calls to loaded models never wait behind loads**: acquiring a loaded model is a counter
  increment on the event loop. Loads and unloads of one device run one at a time on the device's
  own loader thread; concurrent requests for a model being loaded share that one load; devices
  share no lock.
- Idle models are unloaded ``idle_ttl_s`` after their last release (server-side timer); preloaded
  models carry an aged use stamp so they are the first to go; an out-of-memory load evicts every
  idle non-CRITICAL model and retries once, then fails that request only.

Everything here runs on the event loop except the loader thread's blocking work, so the ledger
needs no lock: each decision is made between two awaits.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import importlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from addon_server.errors import ModelNotInstalledError
from addon_server.metrics import Metrics
from addon_server.zoo.interface import (
    LoadContext,
    ModelLoadError,
    ModelState,
    Priority,
    ZooBusyError,
    ZooModel,
)
from addon_server.zoo.memory import Measured, MemoryProbe, Probe, is_out_of_memory
from addon_server.zoo.mlflow_source import RegistrySource, Resolved, is_registry_uri
from addon_server.zoo.policy import Candidate, choose_victims, evictable
from addon_server.zoo.registry import ModelSpec, missing
from addon_server.zoo.runtimes import PRIMERS

_LOGGER = logging.getLogger(__name__)
MB = 1024**2
DEFAULT_DEADLINE_S = 10.0
ESTIMATE_MARGIN = 1.25
"""A model never measured is admitted on a quarter more than its estimate (Ollama's OOMs came from
estimates taken at face value); its measurement then replaces the whole figure."""
MEASURED_MARGIN = 1.25
"""Measured models are admitted on a quarter more than their last figure: onnxruntime's arenas
make a reload measure up to 23 % more (demographics: 69 → 85 MB in benchmarks/zoo.py)."""
QUIET_WAIT_S = 0.5
"""How long a measurement waits for the device's other models to be idle (never longer)."""


@dataclass(eq=False)
class Entry:
    """One registered model on this device, with its place in the ledger."""

    spec: ModelSpec
    state: ModelState = ModelState.UNLOADED
    refcount: int = 0
    accounted: int = 0
    measured: int | None = None
    peak: int | None = None
    last_used: float = 0.0
    loaded_at: float | None = None
    pinned: bool = False
    evicting: bool = False
    evict_reason: str = "pressure"
    """Why it is marked: the unload that runs at its last release is counted under this."""
    model: ZooModel | None = None
    loading: asyncio.Future[ZooModel] | None = None
    unloaded: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.TimerHandle | None = None
    error: str | None = None
    load_seconds: float | None = None
    loads: int = 0
    evictions: int = 0
    margins: tuple[float, float] = (1.0, 1.0)
    source: Resolved | None = None
    """The registry version the loaded (or last loaded) model came from, for ``models:/`` files."""

    @property
    def need(self) -> int:
        """Bytes to hold at admission: the last measurement, else the estimate, each with a
        margin for what measurement cannot know yet (a first load runs the runtime's own
        set-up, and a CPU measurement also sees other threads' work buffers)."""
        estimate_margin, measured_margin = self.margins
        if self.measured is not None:
            return int(self.measured * measured_margin)
        return int(self.spec.estimated_bytes * estimate_margin)

    @property
    def expected(self) -> int:
        """The figure the next load is expected to measure (no margin)."""
        return self.measured if self.measured is not None else self.spec.estimated_bytes

    @property
    def holds_bytes(self) -> bool:
        return self.state in (ModelState.LOADING, ModelState.LOADED, ModelState.UNLOADING)

    @property
    def available(self) -> bool:
        return self.state is ModelState.LOADED and not self.evicting


@dataclass(order=True)
class _Waiter:
    rank: int
    seq: int
    entry: Entry = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)
    since: float = field(compare=False)


class Lease:
    """A held model: use :attr:`model`, then :meth:`release` exactly once (``use`` does it)."""

    def __init__(self, manager: ZooManager, entry: Entry, model: ZooModel) -> None:
        self._manager = manager
        self._entry = entry
        self.model = model
        self.name = entry.spec.name
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._manager._drop_ref(self._entry)


class ZooManager:
    """The zoo on one device (``cpu`` or ``cuda:N``)."""

    def __init__(
        self,
        device: str,
        specs: Iterable[ModelSpec],
        *,
        budget_bytes: int,
        models_dir: Path,
        cotenant_bytes: Callable[[], int] = lambda: 0,
        margin_bytes: int = 256 * MB,
        metrics: Metrics | None = None,
        probe: MemoryProbe | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, int], None] | None = None,
        margins: tuple[float, float] = (ESTIMATE_MARGIN, MEASURED_MARGIN),
        cotenants_busy: Callable[[], bool] = lambda: False,
        primers: Mapping[str, Callable[[str], Any]] = PRIMERS,
        registry: RegistrySource | None = None,
    ) -> None:
        self.device = device
        self.budget_bytes = budget_bytes
        self.models_dir = models_dir
        self.margin_bytes = margin_bytes
        self.metrics = metrics
        self.probe: MemoryProbe = probe if probe is not None else Probe(device)
        self._cotenants = cotenant_bytes
        self._cotenants_busy = cotenants_busy
        self._primers = primers
        self.registry = registry
        self.runtimes: dict[str, tuple[Any, int]] = {}
        """Runtime → (the primer's handle, kept alive; the bytes its set-up took here)."""
        self._clock = clock
        self._on_change = on_change
        self.entries: dict[str, Entry] = {}
        for spec in specs:
            entry = Entry(spec, margins=margins)
            entry.unloaded.set()
            absent = missing(spec, models_dir)
            if absent:
                entry.state = ModelState.NOT_INSTALLED
                entry.error = f"{spec.name} is not installed: missing {', '.join(absent)}"
            self.entries[spec.name] = entry
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._loader = ThreadPoolExecutor(1, thread_name_prefix=f"zoo-loader-{device}")
        self._loader_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.overruns = 0
        self.in_use_evictions = 0
        self.untrusted_measurements = 0
        self._closed = False

    # -- the ledger -----------------------------------------------------------------------

    def zoo_bytes(self) -> int:
        """The models' bytes plus the runtimes they set up (which no unload gives back)."""
        models = sum(e.accounted for e in self.entries.values() if e.holds_bytes)
        return models + self.runtime_bytes()

    def runtime_bytes(self) -> int:
        return sum(nbytes for _handle, nbytes in self.runtimes.values())

    def accounted_bytes(self) -> int:
        """Everything on this device's ledger: the zoo's models and its co-tenants."""
        return self.zoo_bytes() + self._cotenants()

    def headroom(self) -> int:
        """min(budget − accounted, device free − margin): no device call, the probe is cached."""
        room = self.budget_bytes - self.accounted_bytes()
        free = self.probe.free_bytes
        if free is not None:
            room = min(room, free - self.margin_bytes)
        return room

    def _need(self, entry: Entry) -> int:
        """The bytes to hold for ``entry``: its figure with margin, but never more than the
        device can hold at all (the margin must not shut out a model that fits)."""
        return min(entry.need, self.capacity())

    def capacity(self) -> int:
        """The most one model can ever take here (the budget less the co-tenants)."""
        return self.budget_bytes - self._cotenants()

    def _freeing(self) -> int:
        return sum(
            e.accounted
            for e in self.entries.values()
            if e.state is ModelState.UNLOADING or (e.evicting and e.state is ModelState.LOADED)
        )

    def _reclaimable(self, requester: Priority) -> int:
        """Bytes ``requester`` could evict once every model now in use is released (a pin
        stays: a pinned model's bytes are not reclaimable)."""
        return sum(
            c.nbytes
            for c in self._candidates()
            if evictable(
                Candidate(c.name, c.priority, c.last_used, c.nbytes, 0, c.pinned), requester
            )
        )

    def _candidates(self) -> list[Candidate]:
        return [
            Candidate(e.spec.name, e.spec.priority, e.last_used, e.accounted, e.refcount, e.pinned)
            for e in self.entries.values()
            if e.state is ModelState.LOADED and not e.evicting
        ]

    # -- acquiring and releasing ----------------------------------------------------------

    def entry(self, name: str) -> Entry:
        return self.entries[name]

    async def acquire(
        self, name: str, *, deadline_s: float = DEFAULT_DEADLINE_S, priority: Priority | None = None
    ) -> Lease:
        """Hold ``name``, loading it (and evicting idle models) when needed.

        Raises :class:`ModelNotInstalledError`, :class:`ZooBusyError` (not admitted within
        ``deadline_s``, or it can never fit) or :class:`ModelLoadError`.
        """
        entry = self.entries[name]
        started = self._clock()
        if entry.state is ModelState.NOT_INSTALLED:
            raise ModelNotInstalledError(entry.error or f"{name} is not installed")
        while True:
            if entry.expected > self.capacity():
                self._reject(entry, "exceeds_budget")
                raise ZooBusyError(
                    name,
                    "exceeds_budget",
                    f"{name} needs {entry.expected // MB} MB but {self.device}'s budget leaves "
                    f"{max(0, self.capacity()) // MB} MB beside its co-tenants",
                )
            if entry.available:
                self._take_ref(entry)
                self._observe_wait(self._clock() - started)
                assert entry.model is not None
                return Lease(self, entry, entry.model)
            if entry.state is ModelState.LOADING:
                self._take_ref(entry)
            else:
                left = deadline_s - (self._clock() - started)
                await self._admit(entry, priority or entry.spec.priority, left, started)
            try:
                lease = await self._await_load(entry, deadline_s - (self._clock() - started))
            except ZooBusyError as err:
                # The load measured more than its estimate and nothing idle could make up for
                # it, so it is being unloaded: queue again, now on the measured figure.
                if err.reason != "over_budget_after_measure":
                    raise
                if self._clock() - started >= deadline_s:
                    self._reject(entry, "deadline")
                    raise
                continue
            self._observe_wait(self._clock() - started)
            return lease

    @asynccontextmanager
    async def use(
        self, name: str, *, deadline_s: float = DEFAULT_DEADLINE_S
    ) -> AsyncIterator[ZooModel]:
        lease = await self.acquire(name, deadline_s=deadline_s)
        try:
            yield lease.model
        finally:
            lease.release()

    async def _admit(
        self, entry: Entry, priority: Priority, deadline_s: float, started: float
    ) -> None:
        """Queue for admission; on return the reference is taken and a load is under way."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(-int(priority), next(self._seq), entry, loop.create_future(), started)
        heapq.heappush(self._waiters, waiter)
        self._pump()
        if not waiter.future.done():
            try:
                await asyncio.wait({waiter.future}, timeout=max(0.0, deadline_s))
            except asyncio.CancelledError:
                self._abandon(waiter)
                raise
        if waiter.future.done():
            waiter.future.result()  # raises when refused (not installed): no reference taken
            return
        self._abandon(waiter)
        self._reject(entry, "deadline")
        holders = [e.spec.name for e in self.entries.values() if e.refcount > 0]
        raise ZooBusyError(
            entry.spec.name,
            "deadline",
            f"{entry.spec.name} was not admitted within {deadline_s:g} s: {self.device}'s "
            f"budget is held by models in use ({', '.join(holders) or 'loads under way'})",
        )

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter gave up: drop its reference if it was admitted meanwhile, else leave."""
        if waiter.future.done() and not waiter.future.cancelled():
            self._drop_ref(waiter.entry)
            return
        waiter.future.cancel()
        self._pump()  # it may have been the head that held others back

    async def _await_load(self, entry: Entry, timeout_s: float) -> Lease:
        """Wait for the (shared) load, within what is left of the request's deadline.

        The reference taken at admission is ours to drop when we give up; the load itself
        goes on for whoever else waits for it.
        """
        if entry.available:
            assert entry.model is not None
            return Lease(self, entry, entry.model)
        loading = entry.loading
        assert loading is not None
        try:
            await asyncio.wait({loading}, timeout=max(0.0, timeout_s))
        except BaseException:
            self._drop_ref(entry)
            raise
        if not loading.done():
            self._drop_ref(entry)
            self._reject(entry, "deadline")
            raise ZooBusyError(
                entry.spec.name,
                "deadline",
                f"{entry.spec.name} was still loading when the {timeout_s:.3g} s left of the "
                "request's deadline ran out",
            )
        try:
            model = loading.result()
        except BaseException:
            self._drop_ref(entry)
            raise
        return Lease(self, entry, model)

    def _take_ref(self, entry: Entry) -> None:
        entry.refcount += 1
        entry.last_used = self._clock()
        if entry.idle is not None:
            entry.idle.cancel()
            entry.idle = None

    def _drop_ref(self, entry: Entry) -> None:
        entry.refcount -= 1
        assert entry.refcount >= 0, f"{entry.spec.name}: refcount below zero"
        entry.last_used = self._clock()
        if entry.refcount == 0:
            if entry.evicting and entry.state is ModelState.LOADED:
                self._start_unload(entry, entry.evict_reason)
            elif entry.state is ModelState.LOADED:
                self._arm_idle(entry)
        self._pump()

    def _pump(self) -> None:
        """Admit what can be admitted, most important first; evict for the first that cannot.

        Only the first blocked waiter may evict, and its bytes are held back from those behind
        it, so a stream of small requests cannot starve a large, more important one; behind it,
        requests for models that are already loaded (or fit beside the held-back bytes) pass.
        """
        if self._closed:
            return
        live = sorted(w for w in self._waiters if not w.future.done())
        self._waiters = live  # a sorted list is a valid heap
        reserved: int | None = None
        for waiter in live:
            entry = waiter.entry
            if entry.available or entry.state is ModelState.LOADING:
                self._grant(waiter)
                continue
            if entry.state is ModelState.UNLOADING or entry.evicting:
                continue  # the unload must finish first; its end pumps again
            if entry.state is ModelState.NOT_INSTALLED:
                waiter.future.set_exception(ModelNotInstalledError(entry.error or "not installed"))
                continue
            room = self.headroom() - (reserved or 0)
            need = self._need(entry)
            if need <= room:
                self._start_load(entry)
                self._grant(waiter)
                continue
            if reserved is None:
                requester = Priority(-waiter.rank)
                shortfall = need - room - self._freeing()
                victims = choose_victims(self._candidates(), shortfall, requester)
                for victim in victims or ():
                    self._evict(self.entries[victim.name], "pressure")
                # Hold its bytes back from those behind it only if it can be served once the
                # models it may evict are released; one that nothing can make room for (only
                # more important or pinned models hold the budget) must not block the others.
                if victims is not None or shortfall <= self._reclaimable(requester):
                    reserved = need
        self._waiters = [w for w in self._waiters if not w.future.done()]
        heapq.heapify(self._waiters)
        self._publish()

    def _grant(self, waiter: _Waiter) -> None:
        self._take_ref(waiter.entry)
        waiter.future.set_result(None)

    # -- loading ----------------------------------------------------------------------------

    def _start_load(self, entry: Entry) -> None:
        entry.state = ModelState.LOADING
        entry.accounted = self._need(entry)
        entry.error = None
        entry.unloaded.clear()
        entry.loading = asyncio.get_running_loop().create_future()
        entry.loading.add_done_callback(_consume_exception)
        self._spawn(self._run_load(entry))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_load(self, entry: Entry) -> None:
        assert entry.loading is not None
        loop = asyncio.get_running_loop()
        async with self._loader_lock:
            for attempt in (1, 2):
                try:
                    model, measured, entry.source = await loop.run_in_executor(
                        self._loader, self._load_blocking, entry.spec
                    )
                    break
                except ModelNotInstalledError as err:
                    entry.state = ModelState.NOT_INSTALLED
                    self._fail_load(entry, err, str(err))
                    return
                except Exception as err:
                    if is_out_of_memory(err) and attempt == 1:
                        if self.metrics:
                            self.metrics.zoo_ooms.labels(entry.spec.name).inc()
                        _LOGGER.warning(
                            "%s: out of memory while loading; evicting idle models",
                            entry.spec.name,
                        )
                        await self._evict_idle_inline(loop)
                        continue
                    _LOGGER.exception("zoo model %s failed to load", entry.spec.name)
                    entry.state = ModelState.FAILED
                    reason = "oom" if is_out_of_memory(err) else "load_failed"
                    self._fail_load(entry, ModelLoadError(f"{entry.spec.name}: {err}"), reason)
                    return
        self._finish_load(entry, model, measured)

    def _load_blocking(self, spec: ModelSpec) -> tuple[ZooModel, Measured, Resolved | None]:
        context, source = self._context(spec)

        def work() -> ZooModel:
            model = spec.resolve_loader()(context)
            model.warmup()
            return model

        for runtime in spec.requires:
            self._set_up_runtime(runtime)
        if isinstance(spec.loader, str):
            # The loader's Python module stays imported after every unload: its own line too.
            module = spec.loader.partition(":")[0]
            self._set_up_once(f"module {module}", lambda: importlib.import_module(module))
        model, measured = self.probe.measure(work, settle=lambda: self._wait_quiet(spec.name))
        return model, measured, source

    def _context(self, spec: ModelSpec) -> tuple[LoadContext, Resolved | None]:
        """On the loader thread: a ``models:/`` file is resolved again at every load (so an
        alias switch takes effect now) and the loader gets the verified copy as its ``file``
        (or ``folder``) and its folder as the models dir."""
        uri = next((f for f in spec.files if is_registry_uri(f)), None)
        if uri is None:
            return LoadContext(self.models_dir, self.device, dict(spec.options)), None
        if self.registry is None:
            raise ModelNotInstalledError(f"{spec.name}: {uri} needs registry.tracking_uri")
        found = self.registry.resolve(uri)
        folder = found.path if found.path.is_dir() else found.path.parent
        options = {**spec.options, "file": str(found.path), "folder": str(found.path)}
        return LoadContext(folder, self.device, options), found

    def _set_up_runtime(self, runtime: str) -> None:
        """On the loader thread: prime ``runtime`` here once (a runtime with no primer needs
        nothing)."""
        primer = self._primers.get(runtime)
        if primer is not None:
            self._set_up_once(runtime, functools.partial(primer, self.device))

    def _set_up_once(self, what: str, work: Callable[[], Any]) -> None:
        """On the loader thread: set ``what`` up if it is not yet, measured on its own (see
        :mod:`addon_server.zoo.runtimes`), so that no model's figure includes it."""
        if what in self.runtimes:
            return
        handle, measured = self.probe.measure(work, settle=lambda: self._wait_quiet(""))
        self.runtimes[what] = (handle, measured.delta)
        _LOGGER.info("zoo on %s: %s set up, %.1f MB booked", self.device, what, measured.delta / MB)

    async def prime_runtimes(self) -> list[str]:
        """Set up, before any model is measured, the runtimes the installed models need; a
        runtime that fails to set up is left to the first model that needs it (which then
        fails with the cause)."""
        needed = list(
            dict.fromkeys(
                runtime
                for entry in self.entries.values()
                if entry.state is not ModelState.NOT_INSTALLED
                for runtime in entry.spec.requires
                if runtime in self._primers and runtime not in self.runtimes
            )
        )
        if not needed:
            return []
        loop = asyncio.get_running_loop()
        async with self._loader_lock:
            for runtime in needed:
                try:
                    await loop.run_in_executor(self._loader, self._set_up_runtime, runtime)
                except Exception:
                    _LOGGER.exception("zoo on %s: %s failed to set up", self.device, runtime)
        self._publish()
        return [r for r in needed if r in self.runtimes]

    def _wait_quiet(self, loading: str) -> bool:
        """On the loader thread: wait up to QUIET_WAIT_S for no other model to be in use (the
        zoo's, and co-tenants such as the detector that say they are busy)."""
        deadline = time.monotonic() + QUIET_WAIT_S
        while True:
            others = any(e.refcount for n, e in self.entries.items() if n != loading)
            if not others and not self._cotenants_busy():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def _fail_load(self, entry: Entry, err: Exception, reason: str) -> None:
        entry.accounted = 0
        entry.error = str(err)
        if self.metrics:
            self.metrics.zoo_rejections.labels(entry.spec.name, reason).inc()
        entry.unloaded.set()
        assert entry.loading is not None
        entry.loading.set_exception(err)
        self._pump()

    def _finish_load(self, entry: Entry, model: ZooModel, measured: Measured) -> None:
        spec = entry.spec
        estimate = entry.expected
        entry.model = model
        entry.peak = measured.peak
        entry.load_seconds = measured.seconds
        entry.loads += 1
        entry.loaded_at = self._clock()
        entry.state = ModelState.LOADED
        if self.metrics:
            self.metrics.zoo_load_seconds.labels(spec.name).observe(measured.seconds)
        if measured.trusted:
            entry.measured = measured.delta
            entry.accounted = measured.delta
            if self.metrics and estimate:
                self.metrics.zoo_estimate_error.labels(spec.name).set(
                    (measured.delta - estimate) / estimate
                )
        else:
            # Other models ran through both readings, so the figure is theirs too: keep the
            # bytes held at admission (estimate or last measurement, with its margin) and
            # measure again at the next load.
            self.untrusted_measurements += 1
        # Bytes already on their way out were an earlier load's overshoot, corrected then: not
        # this model's, so neither counted again nor made up for by evicting more or by
        # refusing a model that measured within what was held for it.
        unloading = sum(
            e.accounted for e in self.entries.values() if e.state is ModelState.UNLOADING
        )
        over = self.accounted_bytes() - unloading - self.budget_bytes
        if over > 0:
            # The model took more than the bytes held for it: the device is over its budget
            # until the correction below has run. Counted, whichever way it is corrected.
            self.overruns += 1
            if self.metrics:
                self.metrics.zoo_overruns.labels(self.device).inc()
            victims = choose_victims(self._candidates(), over, Priority.HIGH)
            if victims is None:
                entry.evicting, entry.evict_reason = True, "over_budget"
                assert entry.loading is not None
                entry.loading.set_exception(
                    ZooBusyError(
                        spec.name,
                        "over_budget_after_measure",
                        f"{spec.name} measured {measured.delta // MB} MB (estimated "
                        f"{estimate // MB} MB), more than {self.device}'s budget has free; the "
                        "measured figure is used from now on",
                    )
                )
                if entry.refcount == 0:
                    self._start_unload(entry, "over_budget")
                self._pump()
                return
            for victim in victims:
                self._evict(self.entries[victim.name], "pressure")
        assert entry.loading is not None
        entry.loading.set_result(model)
        if entry.refcount == 0:
            self._arm_idle(entry)
        self._pump()

    # -- unloading --------------------------------------------------------------------------

    def _evict(self, entry: Entry, reason: str) -> None:
        """Mark ``entry`` for unloading (sticky); it goes as soon as nobody holds it."""
        entry.evicting, entry.evict_reason = True, reason
        if entry.refcount == 0 and entry.state is ModelState.LOADED:
            self._start_unload(entry, reason)

    def _start_unload(self, entry: Entry, reason: str) -> None:
        if entry.refcount != 0:  # the invariant the whole zoo exists for
            self.in_use_evictions += 1
            raise AssertionError(f"{entry.spec.name} would be unloaded while in use")
        if entry.idle is not None:
            entry.idle.cancel()
            entry.idle = None
        entry.state = ModelState.UNLOADING
        if self.metrics:
            self.metrics.zoo_unloads.labels(entry.spec.name, reason).inc()
            if reason == "pressure":
                self.metrics.zoo_evictions.labels(entry.spec.name, entry.spec.priority.name).inc()
                if entry.loaded_at is not None:
                    self.metrics.zoo_eviction_age.observe(self._clock() - entry.loaded_at)
        if reason == "pressure":
            entry.evictions += 1
        self._spawn(self._run_unload(entry))

    async def _run_unload(self, entry: Entry) -> None:
        loop = asyncio.get_running_loop()
        async with self._loader_lock:
            model, entry.model = entry.model, None
            await loop.run_in_executor(self._loader, self._unload_blocking, model)
        self._finish_unload(entry)

    def _unload_blocking(self, model: ZooModel | None) -> None:
        if model is not None:
            try:
                model.close()
            except Exception:
                _LOGGER.exception("closing a zoo model failed")
        del model
        self.probe.release()

    def _finish_unload(self, entry: Entry) -> None:
        entry.state = ModelState.UNLOADED
        entry.accounted = 0
        entry.evicting = False
        entry.loaded_at = None
        entry.unloaded.set()
        self._pump()

    async def _evict_idle_inline(self, loop: asyncio.AbstractEventLoop) -> None:
        """OOM recovery (loader lock held): unload every idle non-CRITICAL model now."""
        for entry in list(self.entries.values()):
            candidate = Candidate(
                entry.spec.name, entry.spec.priority, entry.last_used, entry.accounted,
                entry.refcount, entry.pinned,
            )  # fmt: skip
            if entry.available and evictable(candidate, Priority.HIGH):
                entry.state = ModelState.UNLOADING
                if self.metrics:
                    self.metrics.zoo_unloads.labels(entry.spec.name, "oom").inc()
                model, entry.model = entry.model, None
                await loop.run_in_executor(self._loader, self._unload_blocking, model)
                self._finish_unload(entry)

    def _arm_idle(self, entry: Entry) -> None:
        if entry.idle is not None:
            entry.idle.cancel()
            entry.idle = None
        if entry.pinned or entry.spec.idle_ttl_s <= 0 or self._closed:
            return
        since = max(entry.last_used, entry.loaded_at or entry.last_used)
        delay = max(0.0, since + entry.spec.idle_ttl_s - self._clock())
        entry.idle = asyncio.get_running_loop().call_later(delay, self._idle_fired, entry)

    def _idle_fired(self, entry: Entry) -> None:
        entry.idle = None
        if entry.refcount or entry.pinned or not entry.available:
            return
        since = max(entry.last_used, entry.loaded_at or entry.last_used)
        if self._clock() - since < entry.spec.idle_ttl_s:
            self._arm_idle(entry)
            return
        entry.evicting = True
        self._start_unload(entry, "idle")

    # -- explicit control (API, preload) ----------------------------------------------------

    async def load(
        self, name: str, *, pin: bool | None = None, deadline_s: float = DEFAULT_DEADLINE_S
    ) -> Entry:
        """Load ``name`` now (and pin or unpin it); it then stays until idle or evicted."""
        entry = self.entries[name]
        if pin is not None:
            entry.pinned = pin
        lease = await self.acquire(name, deadline_s=deadline_s)
        lease.release()
        return entry

    async def unload(self, name: str) -> Entry:
        """Unload ``name`` once nobody holds it (at once when idle; the mark is sticky)."""
        entry = self.entries[name]
        entry.pinned = False
        if entry.state is ModelState.LOADING:
            assert entry.loading is not None
            await asyncio.wait({entry.loading})
        if entry.state is ModelState.LOADED:
            self._evict(entry, "request")
        if entry.refcount == 0 and entry.state is ModelState.UNLOADING:
            await entry.unloaded.wait()
        return entry

    async def preload(self, names: Iterable[str]) -> list[str]:
        """Load ``names`` where they fit without evicting anything; returns what was started.

        Preloaded models get an aged use stamp, so under pressure they go before any model a
        request has used.
        """
        started: list[str] = []
        for name in names:
            entry = self.entries.get(name)
            if entry is None or entry.state is not ModelState.UNLOADED:
                continue
            if self._need(entry) > self.headroom():
                _LOGGER.info("preload of %s skipped: it does not fit beside what is loaded", name)
                continue
            self._start_load(entry)
            entry.last_used = self._clock() - 10 * max(entry.spec.idle_ttl_s, 1.0)
            started.append(name)
        pending = [self.entries[n].loading for n in started]
        if pending:
            await asyncio.wait([p for p in pending if p is not None])
        return started

    async def close(self) -> None:
        """Unload everything (tests, shutdown); refuses nobody who already holds a lease."""
        self._closed = True
        for waiter in self._waiters:
            waiter.future.cancel()
        self._waiters.clear()
        for entry in self.entries.values():
            if entry.idle is not None:
                entry.idle.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        for entry in self.entries.values():
            if entry.model is not None:
                entry.model.close()
                entry.model = None
        self._loader.shutdown(wait=True)

    # -- what it reports --------------------------------------------------------------------

    def _reject(self, entry: Entry, reason: str) -> None:
        if self.metrics:
            self.metrics.zoo_rejections.labels(entry.spec.name, reason).inc()

    def _observe_wait(self, seconds: float) -> None:
        if self.metrics:
            self.metrics.zoo_admission_wait.observe(seconds)

    def _publish(self) -> None:
        if self.metrics:
            used = self.zoo_bytes()
            self.metrics.zoo_usage.labels(self.device).set(used)
            self.metrics.zoo_budget.labels(self.device).set(self.budget_bytes)
            self.metrics.zoo_utilization.labels(self.device).set(self._utilization())
            self.metrics.zoo_loaded.labels(self.device).set(
                sum(1 for e in self.entries.values() if e.state is ModelState.LOADED)
            )
        if self._on_change is not None:
            self._on_change(self.device, self.zoo_bytes())

    def _utilization(self) -> float:
        if self.budget_bytes <= 0:
            return 0.0
        return round(100.0 * self.accounted_bytes() / self.budget_bytes, 1)

    def model_status(self, entry: Entry) -> dict[str, Any]:
        spec = entry.spec
        now = self._clock()
        return {
            "name": spec.name,
            "category": spec.category,
            "priority": spec.priority.name.lower(),
            "device": self.device,
            "state": str(entry.state),
            "estimated_bytes": spec.estimated_bytes,
            "measured_bytes": entry.measured,
            "accounted_bytes": entry.accounted if entry.holds_bytes else 0,
            "peak_bytes": entry.peak,
            "refcount": entry.refcount,
            "pinned": entry.pinned,
            "unload_pending": entry.evicting and entry.state is ModelState.LOADED,
            "idle_ttl_s": spec.idle_ttl_s,
            "idle_s": round(now - entry.last_used, 1)
            if entry.state is ModelState.LOADED and entry.refcount == 0
            else None,
            "load_seconds": round(entry.load_seconds, 3) if entry.load_seconds else None,
            "loads": entry.loads,
            "evictions": entry.evictions,
            "triggers": sorted(spec.triggers),
            "description": spec.description,
            "error": entry.error,
            **({"registry": entry.source.as_json()} if entry.source is not None else {}),
        }

    def get_status(self) -> dict[str, Any]:
        """The seeds' status shape, per device."""
        used = self.accounted_bytes()
        return {
            "device": self.device,
            "vram_budget_mb": round(self.budget_bytes / MB, 1),
            "vram_used_mb": round(used / MB, 1),
            "vram_available_mb": round(max(0, self.budget_bytes - used) / MB, 1),
            "vram_utilization_percent": self._utilization(),
            "zoo_used_mb": round(self.zoo_bytes() / MB, 1),
            "cotenants_mb": round(self._cotenants() / MB, 1),
            "loaded_models": [self.model_status(e) for e in self.entries.values() if e.holds_bytes],
            "registered_models": list(self.entries),
            "pending_loads": [
                e.spec.name for e in self.entries.values() if e.state is ModelState.LOADING
            ]
            + [w.entry.spec.name for w in self._waiters if not w.future.done()],
            "overruns": self.overruns,
        }


def _consume_exception(future: asyncio.Future[Any]) -> None:
    """A load nobody waits for any more must not log 'exception was never retrieved'."""
    if not future.cancelled():
        future.exception()
