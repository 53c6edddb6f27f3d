"""The LLM server as its own process: supervised (a child we run) or external (a URL we check).

Why a process and not ``llama_cpp.Llama`` in the add-on: a 30B GGUF that segfaults, runs out of
GPU memory or hangs must not take detection down with it, and many users already run an LLM
server. So Vigil only ever talks HTTP to the LLM (:mod:`llm`) and this module owns the server's
life:

* :class:`SupervisedServer` starts ``python -m llama_cpp.server`` on loopback with the seeds'
  MODEL_PATH / GPU_LAYERS / CTX_SIZE, waits for ``/v1/models`` to answer, restarts it with
  exponential backoff whenever it exits (the seeds' auto-recovery) and stops it with the add-on
  (SIGTERM, then SIGKILL). The child also gets ``PR_SET_PDEATHSIG`` so that it dies even when
  the add-on itself is killed with SIGKILL and has no chance to stop it: an orphaned server would
  keep the GPU's memory.
* :class:`ExternalServer` checks ``LLM_URL`` at startup and on demand for /health.

The seeds' PARALLEL has no server flag here: llama-cpp-python 0.3.36 has no slots and serves
one completion at a time (its settings have no parallel option). It bounds requests in flight
in the client instead (:class:`~addon_server.reasoning.llm.LLMClient`), which is also what it
means for an external server that has slots of its own.

Both expose :class:`ServerStatus` for /health. Readiness of a running supervised server is
judged from the process, not by polling ``/v1/models``: llama-cpp-python serves that route under
the same lock as completions, so a health probe would wait behind a long generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
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

from .llm import LLMClient, LLMClientConfig, LLMError, normalise_base_url

__all__ = [
    "ExternalServer",
    "LLMServer",
    "ServerState",
    "ServerStatus",
    "SupervisedServer",
    "SupervisorConfig",
    "child_environment",
    "server_command",
]

log = logging.getLogger(__name__)


class ServerState(StrEnum):
    """Lifecycle of the LLM server as /health shows it."""

    STARTING = "starting"  # first start, model loading
    READY = "ready"
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
    loopback port at every (re)start.
    """

    model_path: Path
    device: str = "cpu"
    n_gpu_layers: int = -1
    n_ctx: int = 2048
    n_threads: int | None = None
    n_batch: int | None = None
    host: str = "127.0.0.1"
    port: int = 0
    model_alias: str = "vigil-llm"
    python: str = field(default_factory=lambda: sys.executable)
    extra_args: tuple[str, ...] = ()
    ready_timeout_s: float = 180.0
    poll_interval_s: float = 0.2
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    stable_after_s: float = 60.0
    stop_timeout_s: float = 10.0
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


# Runs in the child before the server: ask the kernel for SIGTERM when the add-on dies, then
# exec the real server (the setting survives exec). Done in the child rather than with
# Popen(preexec_fn=...) because preexec_fn is unsafe in a process with threads. If the add-on
# already died between fork and prctl, the parent pid has changed and the shim exits at once.
_DEATHSIG_SHIM = (
    "import ctypes,os,signal,sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "os.execv(sys.executable, [sys.executable] + sys.argv[2:])\n"
)


class SupervisedServer:
    """Runs and watches one llama-cpp-python server process.

    ``start()`` returns at once; the watcher task loads the model, marks READY when
    ``/v1/models`` answers, and on any exit waits ``backoff`` (1 s, 2 s, 4 s … up to
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

    async def check(self) -> ServerStatus:
        """Same as :meth:`status`: a supervised server's health is its process (see module)."""
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
                self._ready_since = time.time()
                self._ready_event.set()
                log.info(
                    "LLM server ready on %s (pid %s) after %.1fs",
                    self.base_url(),
                    self.pid,
                    self._load_s,
                )
                rc = await self._proc.wait() if self._proc is not None else None
                if time.monotonic() - now >= cfg.stable_after_s:
                    attempt = 0
                failure = f"LLM server exited with code {rc}"
            else:
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
            tail = " | ".join(list(self._tail)[-3:])
            self._last_error = failure + (f": {tail}" if tail else "")
            delay = min(cfg.backoff_max_s, cfg.backoff_initial_s * (2**attempt))
            attempt += 1
            log.warning("%s; restart #%d in %.1fs", self._last_error, self._restarts, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

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
        url: str,
        api_key: str | None = None,
        *,
        model: str = "",
        check_timeout_s: float = 3.0,
        check_interval_s: float = 10.0,
    ) -> None:
        self._url = normalise_base_url(url)
        self._model = model or None
        self._interval = check_interval_s
        self._client = LLMClient(
            self._url,
            LLMClientConfig(api_key=api_key, model=model, connect_timeout_s=check_timeout_s),
        )
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
        """Close the health-check session."""
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
