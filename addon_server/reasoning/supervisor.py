"""The LLM server as its own process: supervised (a child we run) or external (a URL we check).

Why a process and not ``llama_cpp.Llama`` in the add-on: a 30B GGUF that segfaults, runs out of
GPU memory or hangs must not take detection down with it, and many users already run an LLM
server. So Vigil only ever talks HTTP to the LLM (:mod:`llm`) and this module owns the server's
life:

* :class:`SupervisedServer` starts ``python -m llama_cpp.server`` on loopback with the seeds'
  MODEL_PATH / GPU_LAYERS / CTX_SIZE, waits for ``/v1/models`` to answer, restarts it with
  exponential backoff whenever it exits (the seeds' auto-recovery) and stops it with the add-on
  (SIGTERM, then SIGKILL).
* A server that still runs but no longer answers (``kill -STOP``, a wedged driver) is found by
  a liveness probe (see :meth:`SupervisedServer._probe_until_hung`), reported as
  ``unresponsive`` and replaced: SIGKILL (the one signal a stopped process acts on), then the
  same backoff as for a crash. Events fall back to the rules meanwhile.
* The child must not outlive the add-on, even one killed with SIGKILL that cannot stop it: an
  orphaned server keeps the GPU's memory, and the next add-on starts a second one. So the child
  asks the kernel for SIGKILL on its parent's death (``PR_SET_PDEATHSIG``, see
  :data:`_DEATHSIG_SHIM`), and, for whatever escapes that (another OS, a denied prctl), the
  supervisor records its child in ``<data_dir>/llm-server.pid`` and kills a stale one it finds
  there at start-up (:func:`reap_stale_child`).
* :class:`ExternalServer` checks ``LLM_URL`` at startup and on demand for /health.

The seeds' PARALLEL has no server flag here: llama-cpp-python 0.3.36 has no slots and serves
one completion at a time (its settings have no parallel option). It bounds requests in flight
in the client instead (:class:`~addon_server.reasoning.llm.LLMClient`), which is also what it
means for an external server that has slots of its own.

Both expose :class:`ServerStatus` for /health. Liveness of a running supervised server is
probed on ``/openapi.json``, not ``/v1/models``: llama-cpp-python serves ``/v1/models`` under
the same lock as completions, so that probe would wait behind a long generation, while the
OpenAPI document is answered by the server's event loop alone (generation runs in a worker
thread), so it answers within milliseconds unless the process itself is stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from .llm import LLMClient, LLMError
from .settings import DEFAULTS

__all__ = [
    "ExternalServer",
    "LLMServer",
    "ServerState",
    "ServerStatus",
    "SupervisedServer",
    "SupervisorConfig",
    "child_environment",
    "is_running",
    "reap_stale_child",
    "server_command",
]

log = logging.getLogger(__name__)


class ServerState(StrEnum):
    """Lifecycle of the LLM server as /health shows it."""

    STARTING = "starting"  # first start, model loading
    READY = "ready"
    UNRESPONSIVE = "unresponsive"  # runs but missed its liveness probes; being killed
    RESTARTING = "restarting"  # died; waiting out the backoff or loading again
    UNAVAILABLE = "unavailable"  # external server not reachable at the last check
    FAILED = "failed"  # cannot run at all (llama-cpp-python or the model missing)
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """A snapshot for /health; every field is JSON-friendly via :meth:`as_json`."""

    mode: str
    state: ServerState
    url: str | None
    model: str | None
    device: str | None = None
    pid: int | None = None
    restarts: int = 0
    last_error: str | None = None
    last_exit_code: int | None = None
    load_seconds: float | None = None
    restart_to_ready_seconds: float | None = None
    ready_since: float | None = None
    hangs: int = 0
    """How many times the server stopped answering its liveness probe and was replaced."""
    unresponsive: bool = False
    """The current outage began with a missed liveness probe (until the server is ready)."""

    @property
    def ready(self) -> bool:
        """True when requests can be sent now."""
        return self.state is ServerState.READY

    def as_json(self) -> dict[str, Any]:
        """Plain dict for the /health ``llm`` section."""
        return {
            "mode": self.mode,
            "state": self.state.value,
            "ready": self.ready,
            "url": self.url,
            "model": self.model,
            "device": self.device,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_exit_code": self.last_exit_code,
            "load_seconds": self.load_seconds,
            "restart_to_ready_seconds": self.restart_to_ready_seconds,
            "ready_since": self.ready_since,
            "hangs": self.hangs,
            "unresponsive": self.unresponsive,
        }


class LLMServer(Protocol):
    """What the reasoner needs from either kind of server."""

    @property
    def state(self) -> ServerState:
        """Current lifecycle state."""
        ...

    def base_url(self) -> str:
        """Server root URL (no ``/v1``) for the client."""
        ...

    async def start(self) -> None:
        """Start (supervised) or check (external); never raises for an unavailable server."""
        ...

    async def stop(self) -> None:
        """Stop the server (supervised) or release resources."""
        ...

    async def check(self) -> ServerStatus:
        """Refresh and return the status (on-demand /health)."""
        ...

    def status(self) -> ServerStatus:
        """The last known status, without I/O."""
        ...


@dataclass(frozen=True)
class SupervisorConfig:
    """How to run llama-cpp-python's server.

    ``device`` comes from ``devices.py`` placement (``cpu`` or ``cuda:N``). On ``cuda:N`` the
    child sees only that GPU (``CUDA_VISIBLE_DEVICES=N``) so llama.cpp's "GPU 0" is the placed
    one; on ``cpu`` it sees none and ``n_gpu_layers`` is forced to 0. ``port`` 0 picks a free
    loopback port at every (re)start. ``state_dir`` (the add-on's data dir) holds the pidfile
    that lets the next add-on kill a child this one left behind; None keeps no pidfile.
    """

    model_path: Path
    device: str = "cpu"
    n_gpu_layers: int = DEFAULTS.gpu_layers
    n_ctx: int = DEFAULTS.ctx_size
    n_threads: int | None = DEFAULTS.threads
    n_batch: int | None = None
    host: str = "127.0.0.1"
    port: int = 0
    model_alias: str = "vigil-llm"
    python: str = field(default_factory=lambda: sys.executable)
    extra_args: tuple[str, ...] = ()
    ready_timeout_s: float = DEFAULTS.ready_timeout_s
    poll_interval_s: float = 0.2
    backoff_initial_s: float = DEFAULTS.backoff_initial_s
    backoff_max_s: float = DEFAULTS.backoff_max_s
    stable_after_s: float = 60.0
    stop_timeout_s: float = DEFAULTS.stop_timeout_s
    probe_interval_s: float = DEFAULTS.probe_interval_s
    probe_timeout_s: float = DEFAULTS.probe_timeout_s
    probe_misses: int = DEFAULTS.probe_misses
    state_dir: Path | None = None
    log_tail_lines: int = 40

    def __post_init__(self) -> None:
        if self.device != "cpu" and not (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        ):
            raise ValueError(f"device must be 'cpu' or 'cuda:N', got {self.device!r}")
        if self.n_ctx < 128:
            raise ValueError("n_ctx must be >= 128")
        if self.backoff_initial_s <= 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff must be positive and max >= initial")
        if self.probe_interval_s <= 0 or self.probe_timeout_s <= 0 or self.probe_misses < 1:
            raise ValueError("the liveness probe needs a positive interval, timeout and misses")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def server_command(cfg: SupervisorConfig, port: int) -> list[str]:
    """The child's argv after the death-signal shim: llama-cpp-python's OpenAI server."""
    n_gpu_layers = 0 if cfg.device == "cpu" else cfg.n_gpu_layers
    cmd = [
        "-m",
        "llama_cpp.server",
        "--model",
        str(cfg.model_path),
        "--model_alias",
        cfg.model_alias,
        "--host",
        cfg.host,
        "--port",
        str(port),
        "--n_gpu_layers",
        str(n_gpu_layers),
        "--n_ctx",
        str(cfg.n_ctx),
        "--verbose",
        "false",
    ]
    if cfg.n_threads is not None:
        cmd += ["--n_threads", str(cfg.n_threads), "--n_threads_batch", str(cfg.n_threads)]
    if cfg.n_batch is not None:
        cmd += ["--n_batch", str(cfg.n_batch)]
    return cmd + list(cfg.extra_args)


# Environment the child inherits. llama-cpp-python's settings are pydantic BaseSettings, which
# read *any* env var named like a setting (MODEL, PORT, HOST, API_KEY, N_CTX...): the add-on's
# own PORT/HOST (the seeds' names!) would leak into the child. So it gets an allow-list.
_ENV_KEEP = {"PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER", "VIRTUAL_ENV", "PYTHONPATH"}
_ENV_KEEP_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "GGML_", "LLAMA_", "OMP_", "LD_", "HIP_", "ROCR_")


def child_environment(device: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """Allow-listed environment with the placed GPU only (or none for ``cpu``)."""
    src = dict(os.environ if base is None else base)
    env = {k: v for k, v in src.items() if k in _ENV_KEEP or k.startswith(_ENV_KEEP_PREFIXES)}
    env["CUDA_VISIBLE_DEVICES"] = "" if device == "cpu" else device.split(":", 1)[1]
    env["PYTHONUNBUFFERED"] = "1"
    # llama.cpp's OpenMP threads spin while waiting for each other. On CPU cores shared with
    # the detector that is a disaster: on 2 cores with one other busy process, SmolLM2 made
    # 13 tok/s spinning and 33 tok/s with passive waiting (on idle cores spinning is ~1.4x
    # faster). The add-on always shares its cores, so passive is the default; a user's own
    # OMP_WAIT_POLICY (e.g. ACTIVE on a dedicated box) passes through and wins.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


# Runs in the child before the server: ask the kernel for SIGKILL when the add-on dies, then
# exec the real server (the setting survives exec). Done in the child rather than with
# Popen(preexec_fn=...) because preexec_fn is unsafe in a process with threads. If the add-on
# already died between fork and prctl, the parent pid has changed and the shim exits at once.
# SIGKILL, not SIGTERM: on SIGTERM uvicorn first finishes the generation in flight (the child
# outlived a killed add-on by up to 15 s, two LLMs at once after a restart), and a stopped
# child does not act on SIGTERM at all. Nobody is left to read its answers anyway.
# Linux sends the signal when the *thread* that forked exits: asyncio forks from the thread
# that runs the event loop, which in ``serve`` is the main thread and lives as long as the
# process; a loop run in another thread takes the child with it when that thread ends, which
# is when its supervisor ends too.
_DEATHSIG_SHIM = (
    "import ctypes,os,signal,sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "os.execv(sys.executable, [sys.executable] + sys.argv[2:])\n"
)

_ACCESS_LOG = re.compile(r'^INFO:\s+\S+ - "[A-Z]+ \S+ HTTP/[\d.]+" \d{3}')
"""uvicorn's access-log line, e.g. ``INFO:     127.0.0.1:46678 - "GET /openapi.json HTTP/1.1"
200 OK``."""

PIDFILE_NAME = "llm-server.pid"
_SERVER_MODULE = "llama_cpp.server"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(") ", 1)[1].split()


def _identity(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process; None for a gone one.

    The start time tells a process from a later one that got the same pid.
    """
    fields = _proc_stat(pid)
    if fields is None or fields[0] in {"Z", "X"}:
        return None
    return int(fields[1]), int(fields[19])


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (running or stopped; a zombie is dead)."""
    return _identity(pid) is not None


def _is_llama_server(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return _SERVER_MODULE.encode() in argv


def reap_stale_child(state_dir: Path) -> int | None:
    """Kill the LLM server an earlier add-on left behind; its pid, or None if there was none.

    Only a process that is provably that child is killed: the pid is alive with the start time
    recorded at spawn (not a later process that reused the pid), it runs ``llama_cpp.server``,
    and it is orphaned (its parent is no longer the add-on that started it, so no live add-on
    sharing this data dir loses its server). Needs Linux's /proc; elsewhere it does nothing.
    """
    path = state_dir / PIDFILE_NAME
    try:
        record = json.loads(path.read_text())
        pid, started, parent = int(record["pid"]), int(record["start"]), int(record["parent"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("ignoring an unreadable %s", path)
        path.unlink(missing_ok=True)
        return None
    identity = _identity(pid)
    if identity is None or identity[1] != started or not _is_llama_server(pid):
        path.unlink(missing_ok=True)
        return None
    if identity[0] == parent:
        log.warning(
            "the LLM server pid %d in %s belongs to a running add-on (pid %d): is the data dir "
            "shared?",
            pid,
            path,
            parent,
        )
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    log.warning("killed a stale LLM server (pid %d) left behind by an earlier add-on", pid)
    path.unlink(missing_ok=True)
    return pid


class SupervisedServer:
    """Runs and watches one llama-cpp-python server process.

    ``start()`` returns at once; the watcher task loads the model, marks READY when
    ``/v1/models`` answers, probes its liveness while it serves, and on any exit (or a hang,
    which it turns into an exit with SIGKILL) waits ``backoff`` (1 s, 2 s, 4 s … up to
    ``backoff_max_s``; reset once the server stayed up ``stable_after_s``) and starts it again.
    Use :meth:`wait_ready` to block until it serves.
    """

    mode = "supervised"

    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        self._state = ServerState.STOPPED
        self._proc: asyncio.subprocess.Process | None = None
        self._port: int | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._ready_event = asyncio.Event()
        self._tail: deque[str] = deque(maxlen=config.log_tail_lines)
        self._restarts = 0
        self._last_error: str | None = None
        self._last_exit: int | None = None
        self._load_s: float | None = None
        self._restart_to_ready_s: float | None = None
        self._ready_since: float | None = None
        self._hangs = 0
        self._unresponsive = False

    # --- public API ------------------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        """Current lifecycle state."""
        return self._state

    @property
    def pid(self) -> int | None:
        """The running child's pid (None between restarts)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def restarts(self) -> int:
        """How many times the server died and was started again."""
        return self._restarts

    def base_url(self) -> str:
        """Loopback URL of the current child."""
        return f"http://{self.config.host}:{self._port or 0}"

    async def start(self) -> None:
        """Start watching; the model loads in the background (see :meth:`wait_ready`)."""
        if self._watcher is not None and not self._watcher.done():
            return
        model = self.config.model_path
        if not model.is_file():
            self._fail(f"model file not found: {model}")
            return
        if not _has_llama_cpp(self.config.python):
            self._fail("llama-cpp-python is not installed (pip install -r requirements/llm.txt)")
            return
        if self.config.state_dir is not None:
            await asyncio.to_thread(reap_stale_child, self.config.state_dir)
        self._stopping.clear()
        self._state = ServerState.STARTING
        self._watcher = asyncio.create_task(self._watch(), name="llm-supervisor")

    async def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Wait until the server is READY; False on timeout or when it cannot run."""
        if self._state is ServerState.READY:
            return True
        if self._state in (ServerState.FAILED, ServerState.STOPPED):
            return False
        try:
            await asyncio.wait_for(self._ready_event.wait(), timeout_s)
        except TimeoutError:
            return False
        return self.state is ServerState.READY

    async def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after ``stop_timeout_s``) and the watcher."""
        self._stopping.set()
        await self._terminate()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        self._state = ServerState.STOPPED
        self._ready_event.clear()
        self._ready_since = None
        self._forget_pid()

    async def check(self) -> ServerStatus:
        """Same as :meth:`status`: the watcher keeps it current (process exit, liveness
        probe), so /health costs no request to the server."""
        return self.status()

    def status(self) -> ServerStatus:
        """Snapshot for /health."""
        return ServerStatus(
            mode=self.mode,
            state=self._state,
            url=self.base_url() if self._port else None,
            model=self.config.model_path.name,
            device=self.config.device,
            pid=self.pid,
            restarts=self._restarts,
            last_error=self._last_error,
            last_exit_code=self._last_exit,
            load_seconds=self._load_s,
            restart_to_ready_seconds=self._restart_to_ready_s,
            ready_since=self._ready_since,
            hangs=self._hangs,
            unresponsive=self._unresponsive,
        )

    # --- internals -------------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        log.error("LLM server cannot run: %s", message)
        self._last_error = message
        self._state = ServerState.FAILED

    async def _watch(self) -> None:
        cfg = self.config
        attempt = 0
        died_at: float | None = None
        while not self._stopping.is_set():
            spawned = time.monotonic()
            try:
                await self._spawn()
                failure = await self._wait_until_serving()
            except OSError as exc:
                failure = f"cannot start the LLM server: {exc}"
            if failure is None:
                now = time.monotonic()
                self._load_s = now - spawned
                if died_at is not None:
                    self._restart_to_ready_s = now - died_at
                self._state = ServerState.READY
                self._unresponsive = False
                self._ready_since = time.time()
                self._ready_event.set()
                log.info(
                    "LLM server ready on %s (pid %s) after %.1fs",
                    self.base_url(),
                    self.pid,
                    self._load_s,
                )
                assert self._proc is not None
                hangs = self._hangs
                failure, rc = await self._serve(self._proc)
                hung = self._hangs != hangs
                if time.monotonic() - now >= cfg.stable_after_s:
                    attempt = 0
            else:
                hung = False
                await self._terminate()
                rc = self._proc.returncode if self._proc is not None else None
            if self._stopping.is_set():
                break
            died_at = time.monotonic()
            self._ready_event.clear()
            self._ready_since = None
            self._state = ServerState.RESTARTING
            self._restarts += 1
            self._last_exit = rc
            if self._drain_task is not None:
                # Let the reader collect the dying process's last words for last_error.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._drain_task), 1.0)
            # A crash's last words say why; a hung server said nothing about its hang.
            tail = "" if hung else " | ".join(list(self._tail)[-3:])
            self._last_error = failure + (f": {tail}" if tail else "")
            delay = min(cfg.backoff_max_s, cfg.backoff_initial_s * (2**attempt))
            attempt += 1
            log.warning("%s; restart #%d in %.1fs", self._last_error, self._restarts, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _serve(self, proc: asyncio.subprocess.Process) -> tuple[str, int | None]:
        """Wait while the server serves; why it stopped serving, and its exit code."""
        exited = asyncio.create_task(proc.wait())
        prober = asyncio.create_task(self._probe_until_hung())
        try:
            done, _ = await asyncio.wait({exited, prober}, return_when=asyncio.FIRST_COMPLETED)
            reason: str | None = None
            if prober in done and exited not in done:
                if prober.exception() is None:
                    reason = prober.result()
                else:  # a bug in the probe must not cost the server: keep waiting on it
                    log.error("LLM liveness probe failed", exc_info=prober.exception())
            if reason is None:
                rc = await exited
                return f"LLM server exited with code {rc}", rc
            # Not serving from now on: events fall back at once instead of queueing here.
            self._state = ServerState.UNRESPONSIVE
            self._unresponsive = True
            self._ready_event.clear()
            self._ready_since = None
            self._hangs += 1
            self._last_error = reason
            log.warning("%s; killing pid %s", reason, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # SIGKILL: a stopped process acts on no other signal
            return reason, await exited
        finally:
            for task in (exited, prober):
                task.cancel()
            await asyncio.gather(exited, prober, return_exceptions=True)

    async def _probe_until_hung(self) -> str:
        """Probe liveness every ``probe_interval_s``; return once ``probe_misses`` in a row
        went unanswered for ``probe_timeout_s`` (the reason, for /health and the log).

        Any HTTP answer counts as alive: it proves the server's event loop runs. A connection
        alone would not: the kernel accepts connections for a stopped process. The probe path
        is served without the model lock (see the module doc), so a long generation is no miss.
        """
        cfg = self.config
        misses = 0
        url = self.base_url() + "/openapi.json"
        timeout = aiohttp.ClientTimeout(total=cfg.probe_timeout_s)
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            while True:
                started = time.monotonic()
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                    misses = 0
                except (aiohttp.ClientError, TimeoutError):
                    misses += 1
                    if misses >= cfg.probe_misses and not self._stopping.is_set():
                        return (
                            f"LLM server unresponsive: no answer to {misses} liveness probes "
                            f"in a row ({cfg.probe_timeout_s:g}s each)"
                        )
                elapsed = time.monotonic() - started
                await asyncio.sleep(max(0.0, cfg.probe_interval_s - elapsed))

    def _record_pid(self, pid: int) -> None:
        """Write the pidfile :func:`reap_stale_child` reads (best effort: no /proc, no file)."""
        state_dir = self.config.state_dir
        identity = _identity(pid)
        if state_dir is None or identity is None:
            return
        record = {"pid": pid, "start": identity[1], "parent": os.getpid()}
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            (state_dir / PIDFILE_NAME).write_text(json.dumps(record))
        except OSError as exc:
            log.warning("cannot record the LLM server's pid in %s: %s", state_dir, exc)

    def _forget_pid(self) -> None:
        if self.config.state_dir is not None:
            with contextlib.suppress(OSError):
                (self.config.state_dir / PIDFILE_NAME).unlink(missing_ok=True)

    async def _spawn(self) -> None:
        cfg = self.config
        self._port = cfg.port or free_port(cfg.host)
        self._tail.clear()
        argv = [
            cfg.python,
            "-c",
            _DEATHSIG_SHIM,
            str(os.getpid()),
            *server_command(cfg, self._port),
        ]
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=child_environment(cfg.device),
            start_new_session=True,  # a Ctrl-C to the add-on must not hit the child directly
        )
        self._drain_task = asyncio.create_task(self._drain(self._proc), name="llm-server-log")
        self._record_pid(self._proc.pid)
        log.info("started LLM server pid %s: %s", self._proc.pid, " ".join(argv[4:]))

    async def _drain(self, proc: asyncio.subprocess.Process) -> None:
        """Keep the child's output flowing (a full pipe would block it) and its tail at hand."""
        stream = proc.stdout
        if stream is None:
            return
        while True:
            line = await stream.readline()
            if not line:
                return
            text = line.decode("utf-8", errors="replace").rstrip()
            if text:
                if not _ACCESS_LOG.match(text):  # the probes' requests are no last words
                    self._tail.append(text)
                log.debug("llm-server: %s", text)

    async def _wait_until_serving(self) -> str | None:
        """Poll ``/v1/models`` until it answers; the reason it never did, or None when ready."""
        cfg = self.config
        deadline = time.monotonic() + cfg.ready_timeout_s
        url = self.base_url() + "/v1/models"
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                if self._stopping.is_set():
                    return "stopping"
                proc = self._proc
                if proc is None or proc.returncode is not None:
                    code = None if proc is None else proc.returncode
                    return f"LLM server exited with code {code} while starting"
                try:
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return None
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(cfg.poll_interval_s)
        return f"LLM server not ready within {cfg.ready_timeout_s:g}s"

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)  # a stopped process acts on SIGTERM only now
        try:
            await asyncio.wait_for(proc.wait(), self.config.stop_timeout_s)
        except TimeoutError:
            log.warning("LLM server pid %s ignored SIGTERM; killing it", proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _has_llama_cpp(python: str) -> bool:
    """Whether ``python`` can import llama_cpp.server, without importing it here.

    Only checked for our own interpreter (the common case): importing llama_cpp would load
    its native library into the add-on, which is exactly what the separate process avoids.
    """
    if Path(python).resolve() != Path(sys.executable).resolve():
        return True
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


class ExternalServer:
    """An OpenAI-compatible server the user runs (``LLM_URL`` + optional ``LLM_API_KEY``).

    Checked with ``GET /v1/models`` at startup and when /health asks (at most every
    ``check_interval_s``; /health may be polled often). An unreachable server is not fatal:
    events fall back to the rules until it answers again.
    """

    mode = "external"

    def __init__(
        self,
        client: LLMClient,
        *,
        check_timeout_s: float = DEFAULTS.connect_timeout_s,
        check_interval_s: float = 10.0,
    ) -> None:
        # The events' client: one session, one place that handles the URL's credentials.
        self._client = client
        self._url = client.base_url  # without credentials (see endpoint.py)
        self._model = client.config.model or None
        self._interval = check_interval_s
        self._check_timeout = check_timeout_s
        self._state = ServerState.STARTING
        self._last_error: str | None = None
        self._checked_at: float | None = None
        self._ready_since: float | None = None
        self._lock = asyncio.Lock()

    @property
    def state(self) -> ServerState:
        """READY after a successful check, UNAVAILABLE after a failed one."""
        return self._state

    @property
    def model(self) -> str | None:
        """Configured model, else the first one the server listed."""
        return self._model

    def base_url(self) -> str:
        """The configured server root."""
        return self._url

    async def start(self) -> None:
        """Check once; logs (does not raise) when the server is unreachable."""
        status = await self.check(force=True)
        if not status.ready:
            log.warning("external LLM at %s unavailable: %s", self._url, status.last_error)

    async def stop(self) -> None:
        """Close the client's session."""
        await self._client.close()
        self._state = ServerState.STOPPED

    async def check(self, force: bool = False) -> ServerStatus:
        """``GET /v1/models`` unless the last check is fresher than ``check_interval_s``."""
        async with self._lock:
            fresh = (
                self._checked_at is not None
                and time.monotonic() - self._checked_at < self._interval
            )
            if force or not fresh:
                try:
                    models = await self._client.list_models(self._check_timeout)
                except LLMError as exc:
                    self._state = ServerState.UNAVAILABLE
                    self._last_error = exc.message
                    self._ready_since = None
                else:
                    if self._state is not ServerState.READY:
                        self._ready_since = time.time()
                    self._state = ServerState.READY
                    self._last_error = None
                    if self._model is None and models:
                        self._model = models[0]
                self._checked_at = time.monotonic()
        return self.status()

    def report(self, ok: bool, error: str | None = None) -> None:
        """Let a completion's outcome update the state between checks."""
        if ok:
            if self._state is not ServerState.READY:
                self._ready_since = time.time()
            self._state = ServerState.READY
            self._last_error = None
        elif error:
            self._last_error = error

    def status(self) -> ServerStatus:
        """Snapshot for /health (the API key is never shown)."""
        return ServerStatus(
            mode=self.mode,
            state=self._state,
            url=self._url,
            model=self._model,
            last_error=self._last_error,
            ready_since=self._ready_since,
        )
