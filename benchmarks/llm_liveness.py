"""Figures for a frozen or orphaned LLM server (issue 12, item 10).

Run with the add-on venv (needs requirements/llm.txt):

    .venv-addon/bin/python benchmarks/llm_liveness.py [--repeats 3] [--repo PATH] [--json out.json]

1. **Hang detection and replacement** (this checkout's supervisor, default probe settings
   unless overridden): ``kill -STOP`` the supervised SmolLM2 server, then time until the
   supervisor reports it ``unresponsive``, until the stopped process is gone, and until a new
   one serves. Also the liveness probe's own latency while a long generation runs (what must
   stay well below ``probe_timeout_s`` for the probe never to call a busy server hung).
2. **Child linger after SIGKILL of the add-on**: a real ``python -m addon_server serve`` from
   ``--repo`` (default: this checkout; point it at an older checkout for a before/after),
   SIGKILLed once while its LLM generates an answer and once with its LLM frozen; the time
   until the LLM server is gone (capped at ``--linger-cap`` seconds: "still alive").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from addon_server.reasoning.context import BBox, DetectedObject, SceneContext  # noqa: E402
from addon_server.reasoning.prompt import build_messages  # noqa: E402
from addon_server.reasoning.reasoner import embedded_model_path  # noqa: E402
from addon_server.reasoning.settings import DEFAULTS  # noqa: E402
from addon_server.reasoning.supervisor import (  # noqa: E402
    ServerState,
    SupervisedServer,
    SupervisorConfig,
    free_port,
    is_running,
)


async def until(predicate: Any, cap_s: float = 120.0, step_s: float = 0.005) -> float:
    """Seconds until ``predicate()`` holds (polled), or ``cap_s``."""
    t0 = time.perf_counter()
    while not predicate() and time.perf_counter() - t0 < cap_s:
        await asyncio.sleep(step_s)
    return time.perf_counter() - t0


def scene() -> SceneContext:
    from datetime import UTC, datetime

    box = DetectedObject("person", 0.9, BBox(10, 10, 100, 300), 1000, 1000)
    return SceneContext(camera="front_door", timestamp=datetime.now(UTC), objects=(box,))


async def probe_latency_during_generation(sup: SupervisedServer) -> dict[str, float]:
    """GET /openapi.json latencies while a 256-token answer is being generated."""
    body = {
        "messages": build_messages(scene()),
        "max_tokens": 256,
        "temperature": 0.0,
        "stream": False,
    }
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        gen = asyncio.create_task(session.post(sup.base_url() + "/v1/chat/completions", json=body))
        await asyncio.sleep(0.3)
        while not gen.done():
            t0 = time.perf_counter()
            async with session.get(sup.base_url() + "/openapi.json") as resp:
                await resp.read()
            latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(0.1)
        (await gen).release()
    return {
        "probes": len(latencies),
        "median_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "max_ms": max(latencies) * 1000 if latencies else float("nan"),
    }


async def bench_hang(args: argparse.Namespace) -> dict[str, Any]:
    cfg = SupervisorConfig(
        model_path=embedded_model_path(),
        n_ctx=1024,
        n_threads=args.threads,
        probe_interval_s=args.probe_interval,
        probe_timeout_s=args.probe_timeout,
        probe_misses=args.probe_misses,
        backoff_initial_s=DEFAULTS.backoff_initial_s,
    )
    sup = SupervisedServer(cfg)
    await sup.start()
    assert await sup.wait_ready(300), sup.status()
    out: dict[str, Any] = {
        "probe": {
            "interval_s": cfg.probe_interval_s,
            "timeout_s": cfg.probe_timeout_s,
            "misses": cfg.probe_misses,
        },
        "probe_latency_during_generation": await probe_latency_during_generation(sup),
        "runs": [],
    }
    try:
        for _ in range(args.repeats):
            pid = sup.pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            t0 = time.perf_counter()
            detect = await until(lambda: sup.state is not ServerState.READY)
            await until(lambda p=pid: not is_running(p))
            killed = time.perf_counter() - t0
            await until(lambda: sup.state is ServerState.READY, cap_s=300)
            total = time.perf_counter() - t0
            out["runs"].append(
                {
                    "detect_s": round(detect, 2),
                    "killed_s": round(killed, 2),
                    "replaced_ready_s": round(total, 2),
                    "restart_s": round(total - killed, 2),
                    "new_pid": sup.pid != pid,
                }
            )
            print("hang:", out["runs"][-1], flush=True)
            await asyncio.sleep(1.0)
    finally:
        await sup.stop()
    return out


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def linger_once(repo: Path, frozen: bool, cap_s: float, image: bytes) -> float:
    """Seconds the LLM child outlives a SIGKILLed add-on (cap_s: it was still alive)."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        config = Path(tmp) / "vigil.yaml"
        config.write_text(
            json.dumps(
                {
                    "server": {"port": port, "data_dir": str(Path(tmp) / "data")},
                    "detector": {"warmup": False},
                    "batching": {"autotune": False},
                    "reid": {"enabled": False},
                    "llm": {"ctx_size": 1024, "threads": 2, "max_tokens": 384},
                }
            )
        )
        addon = subprocess.Popen(
            [sys.executable, "-m", "addon_server", "serve", "--config", str(config)],
            cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        child = None
        try:
            deadline = time.monotonic() + 300
            while child is None and time.monotonic() < deadline:
                with contextlib.suppress(OSError, ValueError):
                    llm = _health(port)["llm"]
                    if llm.get("state") == "ready":
                        child = llm["pid"]
                time.sleep(0.2)
            assert child is not None, "LLM never ready"
            if frozen:
                os.kill(child, signal.SIGSTOP)
            else:
                # An analysis whose LLM answer is being generated when the add-on dies.
                def post() -> None:
                    req = urllib.request.Request(
                        f"http://127.0.0.1:{port}/v1/analyze?camera=front_door",
                        data=image,
                        headers={"Content-Type": "image/jpeg"},
                    )
                    with contextlib.suppress(OSError):
                        urllib.request.urlopen(req, timeout=120).read()

                threading.Thread(target=post, daemon=True).start()
                time.sleep(2.0)  # decode + detect, then the generation is under way
            addon.kill()
            addon.wait()
            t0 = time.perf_counter()
            while is_running(child) and time.perf_counter() - t0 < cap_s:
                time.sleep(0.01)
            return time.perf_counter() - t0
        finally:
            if addon.poll() is None:
                addon.kill()
            if child is not None and is_running(child):
                os.kill(child, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probe-interval", type=float, default=DEFAULTS.probe_interval_s)
    parser.add_argument("--probe-timeout", type=float, default=DEFAULTS.probe_timeout_s)
    parser.add_argument("--probe-misses", type=int, default=DEFAULTS.probe_misses)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose serve to kill")
    parser.add_argument("--linger-cap", type=float, default=30.0)
    parser.add_argument("--skip-hang", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import ultralytics

    bus = (Path(ultralytics.__file__).parent / "assets" / "bus.jpg").read_bytes()
    results: dict[str, Any] = {}
    if not args.skip_hang:
        results["hang"] = asyncio.run(bench_hang(args))
    results["linger_s"] = {}
    for frozen in (False, True):
        label = "frozen_child" if frozen else "generating_child"
        runs = [
            round(linger_once(args.repo.resolve(), frozen, args.linger_cap, bus), 2)
            for _ in range(args.repeats)
        ]
        results["linger_s"][label] = runs
        print(f"linger ({label}, repo {args.repo}):", runs, flush=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
