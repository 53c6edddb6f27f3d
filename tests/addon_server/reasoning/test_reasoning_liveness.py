"""A frozen or orphaned LLM server, with the real llama.cpp server and the real add-on.

* ``kill -STOP`` on the supervised child: /health must say so, events must fall back to the
  rules at once instead of waiting out the LLM timeout, and the child must be replaced.
* SIGKILL of a real ``python -m addon_server serve``: its child must not outlive it.
* A child left behind anyway (recorded in the data dir's pidfile) is killed by the next
  supervisor, and nothing else is.

No assertion here is about elapsed time: each waits with a generous deadline for a state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from addon_server.app import create_app
from addon_server.reasoning.reasoner import embedded_model_path
from addon_server.reasoning.supervisor import (
    PIDFILE_NAME,
    SupervisedServer,
    SupervisorConfig,
    free_port,
    reap_stale_child,
)
from addon_server.services import SERVICES_KEY
from tests.addon_server.conftest import HANG_TIMEOUT_S, LLM_HANG_TIMEOUT_S, eventually

# A whole test's hang guard, above the bounds inside it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(6 * LLM_HANG_TIMEOUT_S)]

REPO = Path(__file__).resolve().parents[3]

# Small and quick to load; a probe every half second, three misses of 2 s each = hung.
LLM = {
    "mode": "supervised",
    "ctx_size": 1024,
    "threads": 2,
    "max_tokens": 320,
    # Hang guards: far longer than a hang takes to be found, so a fallback never waits for them.
    "timeout_s": LLM_HANG_TIMEOUT_S,
    "ready_timeout_s": LLM_HANG_TIMEOUT_S,
    "backoff_initial_s": 0.2,
    "backoff_max_s": 2,
    "stop_timeout_s": 5,
    "probe_interval_s": 0.5,
    "probe_timeout_s": 2,
    "probe_misses": 3,
}


def alive(pid: int) -> bool:
    """Running or stopped; a zombie or a vanished pid is dead for our purposes."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(") ", 1)[1][0] not in "ZX"


def wait_gone(pid: int, deadline_s: float = HANG_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + deadline_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def kill_quietly(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_frozen_llm_is_reported_bypassed_and_replaced(
    aiohttp_client: Any,
    make_settings: Any,
    counting_detector: Any,
    bus_jpg: bytes,
    llm_requests: list[object],
) -> None:
    settings = make_settings(
        {"llm": LLM, "detector": {"warmup": False}, "reasoning": {"llm_policy": "always"}}
    )
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    reasoner = client.app[SERVICES_KEY].reasoner
    refiner = client.app[SERVICES_KEY].analyzer.refiner
    assert await reasoner.wait_ready(LLM_HANG_TIMEOUT_S), reasoner.status()
    before = (await (await client.get("/health")).json())["llm"]
    assert (before["state"], before["hangs"], before["unresponsive"]) == ("ready", 0, False)
    frozen = before["pid"]

    resp = await client.post(
        "/v1/analyze",
        params={"camera": "front_door"},
        data=bus_jpg,
        headers={"Content-Type": "image/jpeg"},
    )
    assert resp.status == 200, await resp.text()
    initial = await resp.json()
    assert initial["llm_status"] == "pending"
    try:
        # Frozen while the refinement waits on it (however long detection took), so the
        # refinement cannot reach a replacement instead.
        await eventually(lambda: len(llm_requests) == 1, "the refinement asks the LLM")
        os.kill(frozen, signal.SIGSTOP)
        # /health notices: the llm section and an issue (a Home Assistant repair).
        seen: dict[str, Any] = {}
        deadline = time.monotonic() + HANG_TIMEOUT_S
        while time.monotonic() < deadline:
            seen = await (await client.get("/health")).json()
            if seen["llm"]["unresponsive"]:
                break
            await asyncio.sleep(0.05)
        assert seen["llm"]["unresponsive"], seen["llm"]
        assert seen["llm"]["state"] in {"unresponsive", "restarting"}
        assert not seen["llm"]["ready"]
        assert seen["status"] == "degraded"
        issues = [i for i in seen["issues"] if i.get("service") == "llm"]
        assert [i["code"] for i in issues] == ["llm_unresponsive"]
        assert "liveness" in issues[0]["message"]

        # The refinement in flight fell back to the rules because the server hung, not
        # because its timeout ran out.
        await refiner.join()
        event = await (await client.get(f"/v1/events/{initial['id']}")).json()
        assert (event["revision"], event["llm_status"]) == (2, "failed")
        assert "unresponsive" in event["llm_error"]
        assert "timeout" not in event["llm_error"]
        assert event["risk_score"] == event["rule_score"]

        # The hung child was killed (SIGKILL works on a stopped process) and replaced.
        assert wait_gone(frozen), "the frozen LLM server was not killed"
        assert await reasoner.wait_ready(LLM_HANG_TIMEOUT_S), reasoner.status()
        after = await (await client.get("/health")).json()
        assert after["llm"]["state"] == "ready"
        assert after["llm"]["pid"] not in (None, frozen)
        assert (after["llm"]["hangs"], after["llm"]["unresponsive"]) == (1, False)
        assert "liveness" in after["llm"]["last_error"]
        assert not [i for i in after["issues"] if i.get("service") == "llm"]
    finally:
        kill_quietly(frozen)


@pytest.fixture
def addon_config(tmp_path: Path) -> Path:
    document = {
        "server": {"port": free_port(), "data_dir": str(tmp_path / "data")},
        "detector": {"warmup": False},
        "batching": {"autotune": False},
        "reid": {"enabled": False},
        "llm": LLM,
    }
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


@contextlib.contextmanager
def serve(config: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A real ``python -m addon_server serve``; yields it with its LLM child's pid when ready."""
    port = yaml.safe_load(config.read_text())["server"]["port"]
    addon = subprocess.Popen(
        [sys.executable, "-m", "addon_server", "serve", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    child: int | None = None
    try:
        deadline = time.monotonic() + LLM_HANG_TIMEOUT_S
        while child is None and time.monotonic() < deadline:
            assert addon.poll() is None, "the add-on exited"
            with contextlib.suppress(OSError, ValueError):
                llm = _health(port)["llm"]
                if llm["state"] == "ready":
                    child = llm["pid"]
            time.sleep(0.2)
        assert child is not None, "the LLM never became ready"
        yield addon, child
    finally:
        if addon.poll() is None:
            addon.kill()
            addon.wait()
        if child is not None and alive(child):
            kill_quietly(child)


def test_llm_child_dies_with_a_killed_addon(addon_config: Path) -> None:
    """SIGKILL of the add-on leaves no LLM server behind, even a frozen one.

    The child used to get SIGTERM on the add-on's death, which a stopped process never acts
    on (and which a running one answers by first finishing its generation: it lingered up
    to 15 s, two LLMs at once after a restart). Now it gets SIGKILL.
    """
    data_dir = Path(yaml.safe_load(addon_config.read_text())["server"]["data_dir"])
    with serve(addon_config) as (addon, child):
        assert alive(child)
        assert json.loads((data_dir / PIDFILE_NAME).read_text())["pid"] == child
        os.kill(child, signal.SIGSTOP)  # frozen, as in the hang above
        addon.kill()
        addon.wait()
        assert wait_gone(child), "the LLM server outlived the add-on"
    # The pidfile a SIGKILLed add-on cannot remove names a dead process now: ignored.
    assert reap_stale_child(data_dir) is None
    assert not (data_dir / PIDFILE_NAME).exists()


def _llama_server() -> subprocess.Popen[bytes]:
    """A llama_cpp.server that no supervisor of ours started (what an orphan looks like)."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path()),
            "--host", "127.0.0.1", "--port", str(free_port()), "--n_ctx", "256",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"])


def _start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


async def test_stale_child_in_the_pidfile_is_killed_at_start(tmp_path: Path) -> None:
    """The belt to PR_SET_PDEATHSIG's braces: a child recorded by a dead add-on is killed
    when the next supervisor starts, and only then (not a live add-on's, not a reused pid)."""
    orphan = _llama_server()
    other = _sleeper()
    sup: SupervisedServer | None = None
    try:
        pidfile = tmp_path / PIDFILE_NAME

        def record(pid: int, start: int, parent: int) -> None:
            pidfile.write_text(json.dumps({"pid": pid, "start": start, "parent": parent}))

        # Not a llama server (a pid reused by something else): left alone.
        record(other.pid, _start_time(other.pid), _dead_pid())
        assert reap_stale_child(tmp_path) is None
        assert other.poll() is None
        # The right process but another start time (pid reuse): left alone.
        record(orphan.pid, _start_time(orphan.pid) + 1, _dead_pid())
        assert reap_stale_child(tmp_path) is None
        # Its parent (this test) is the add-on that recorded it and still runs: left alone.
        record(orphan.pid, _start_time(orphan.pid), os.getpid())
        assert reap_stale_child(tmp_path) is None
        assert orphan.poll() is None

        # Recorded by an add-on that is gone: the next supervisor kills it as it starts.
        record(orphan.pid, _start_time(orphan.pid), _dead_pid())
        sup = SupervisedServer(
            SupervisorConfig(model_path=embedded_model_path(), n_ctx=256, state_dir=tmp_path)
        )
        await sup.start()
        assert orphan.wait(HANG_TIMEOUT_S) == -signal.SIGKILL
        assert await sup.wait_ready(LLM_HANG_TIMEOUT_S), sup.status()
        # ...and records its own child in its place.
        record_now = json.loads(pidfile.read_text())
        assert (record_now["pid"], record_now["parent"]) == (sup.pid, os.getpid())
        await sup.stop()
        assert not pidfile.exists()
    finally:
        if sup is not None:
            await sup.stop()
        for proc in (orphan, other):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
