"""Analysis throughput and latency: one process vs the model stages on Ray Serve (issue 16).

Three set-ups on this machine, each measured through the add-on's ``POST /v1/analyze`` (rules
only, ultralytics' zidane.jpg: two persons, so the zoo's person models run):

* ``single``  — the add-on alone (detector and zoo in its process);
* ``ray-1``   — ``BACKEND=ray``, a head and one host running every stage;
* ``ray-2``   — ``BACKEND=ray``, a head and two hosts (detector on A, zoo on B).

For each, throughput and p50/p95 at concurrency 1, 8 and 32, and the per-stage times the add-on
reports (``timings_ms.detect``, ``timings_ms.enrich``): the Ray set-ups' excess over ``single``
at concurrency 1 is the hop overhead of that stage (HTTP to the ingress, the handle call, the
object store copy of the pixels). ``failed`` counts non-200 answers, left out of the latencies.
Every request is admitted (``analysis.max_waiting: 64``). Runs inside a private network
namespace, like the tests.

Usage: ``.venv-addon/bin/python benchmarks/scale.py [--requests N] [--modes single,ray-1,ray-2]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import ultralytics
import yaml

HERE = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(HERE)]

from benchmarks.addon_process import wait_healthy  # noqa: E402
from tests.addon_server.scale.cluster import (  # noqa: E402
    NETNS_ENV,
    SERVE_URL,
    cluster,
    in_private_netns,
    private_netns_command,
    sweep_namespace,
    wait_for,
)

IMAGE = Path(ultralytics.__file__).parent / "assets" / "zidane.jpg"
MODELS_DIR = os.environ.get("VIGIL_MODELS_DIR", "/work/shared/models")
ZOO_MODELS = ["pose", "person_reid"]
LEVELS = (1, 8, 32)
PORT = 8095


def _app_ready() -> bool:
    request = urllib.request.Request(f"{SERVE_URL}/classes", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _config(tmp: Path, hosts: dict[str, str]) -> Path:
    document = yaml.safe_load((HERE / "deploy" / "ray" / "vigil.yaml").read_text())
    document["http_options"]["host"] = "127.0.0.1"
    args = document["applications"][0]["args"]
    args.update(models_dir=MODELS_DIR, zoo_models=ZOO_MODELS, hosts=hosts)
    args["max_ongoing_requests"] = {"ingress": 256}
    args["max_queued_requests"] = {"ingress": -1}
    path = tmp / "vigil.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


HEADERS = {"Authorization": "Bearer bench", "Content-Type": "image/jpeg"}
ANALYZE = "/v1/analyze?camera=bench&use_llm=false"


async def _level(
    session: aiohttp.ClientSession, url: str, body: bytes, level: int, count: int
) -> dict[str, Any]:
    """``count`` analyses by ``level`` concurrent clients."""
    latencies: list[float] = []
    stages: dict[str, list[float]] = defaultdict(list)
    degraded = refused = 0
    left = list(range(count))

    async def client() -> None:
        nonlocal degraded, refused
        while left:
            left.pop()
            started = time.perf_counter()
            async with session.post(f"{url}{ANALYZE}", data=body, headers=HEADERS) as resp:
                event = await resp.json()
            if resp.status != 200:
                refused += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            degraded += bool(event.get("degraded"))
            for stage in ("detect", "enrich"):
                stages[stage].append(float(event["timings_ms"].get(stage, 0.0)))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(level)))
    elapsed = time.perf_counter() - started
    return {
        "throughput": len(latencies) / elapsed,
        "p50": _pct(latencies, 0.5) if latencies else 0.0,
        "p95": _pct(latencies, 0.95) if latencies else 0.0,
        "refused": refused,
        "detect": statistics.median(stages["detect"]) if stages["detect"] else 0.0,
        "enrich": statistics.median(stages["enrich"]) if stages["enrich"] else 0.0,
        "degraded": degraded,
    }


async def _measure(url: str, requests: int) -> dict[int, dict[str, Any]]:
    body = IMAGE.read_bytes()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        for _ in range(3):  # warm-up: models loaded, batcher tuned
            async with session.post(f"{url}{ANALYZE}", data=body, headers=HEADERS) as resp:
                await resp.read()
        return {
            level: await _level(session, url, body, level, max(requests, 2 * level))
            for level in LEVELS
        }


async def _with_addon(env: dict[str, str], requests: int) -> dict[int, dict[str, Any]]:
    data = tempfile.mkdtemp(prefix="vigil-scale-")
    full = {
        **os.environ,
        "PYTHONPATH": str(HERE),
        "PORT": str(PORT),
        "VIGIL_DATA_DIR": data,
        "VIGIL_API_TOKEN": "bench",
        "LLM_MODE": "disabled",
        "LOG_LEVEL": "ERROR",
        "VIGIL_MODELS_DIR": MODELS_DIR,
        **env,
    }
    # Every request is admitted (the default line of 8 would refuse most of c=32 with 429):
    # the figures are the stages' throughput and queueing, not the add-on's admission.
    Path(data, "vigil.yaml").write_text("analysis:\n  max_concurrent: 4\n  max_waiting: 64\n")
    proc = subprocess.Popen([sys.executable, "-m", "addon_server", "serve"], env=full, cwd=data)
    url = f"http://127.0.0.1:{PORT}"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, url, proc, timeout_s=300)
        return await _measure(url, requests)
    finally:
        proc.terminate()
        proc.wait(30)


async def run_mode(mode: str, requests: int) -> dict[int, dict[str, Any]]:
    if mode == "single":
        # The zoo serves the same person models as the Ray set-ups (the rest disabled).
        from addon_server.zoo.registry import Registry

        off = ",".join(n for n in Registry().names() if n not in ZOO_MODELS)
        return await _with_addon({"ENRICHMENT_DISABLED_MODELS": off}, requests)
    hosts = (
        {"detector": "vigil_host_a", "zoo": "vigil_host_a", "llm": "vigil_host_a"}
        if mode == "ray-1"
        else {"detector": "vigil_host_a", "zoo": "vigil_host_b", "llm": "vigil_host_b"}
    )
    needed = dict.fromkeys(hosts.values(), 1)
    with cluster(needed) as made:
        made.serve_deploy(_config(Path(tempfile.mkdtemp(prefix="vrc")), hosts))
        wait_for(_app_ready, 300, "the Serve application")  # serve deploy does not wait
        env = {"BACKEND": "ray", "RAY_SERVE_URL": SERVE_URL, "RAY_DETECTOR_TIMEOUT_S": "120"}
        env["RAY_ZOO_TIMEOUT_S"] = "120"
        return await _with_addon(env, requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=16, help="requests per level (min 2×c)")
    parser.add_argument("--modes", default="single,ray-1,ray-2")
    args = parser.parse_args()
    if not in_private_netns():
        command = private_netns_command([sys.executable, *sys.argv])
        sys.exit(subprocess.call(command, env={**os.environ, NETNS_ENV: "1"}))
    table: dict[str, dict[int, dict[str, Any]]] = {}
    try:
        for mode in args.modes.split(","):
            print(f"== {mode}", flush=True)
            table[mode] = asyncio.run(run_mode(mode, args.requests))
    finally:
        sweep_namespace()
    print(
        f"{'mode':8} {'c':>3} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'detect ms':>10} {'enrich ms':>10} {'degraded':>8} {'failed':>6}"
    )
    for mode, levels in table.items():
        for level, row in levels.items():
            print(
                f"{mode:8} {level:>3} {row['throughput']:7.2f} {row['p50']:8.1f} "
                f"{row['p95']:8.1f} {row['detect']:10.1f} {row['enrich']:10.1f} "
                f"{row['degraded']:>8} {row['refused']:>6}"
            )
    base = table.get("single", {}).get(1)
    if base:
        print("\nhop overhead per stage at c=1 (median, Ray minus single process):")
        for mode, levels in table.items():
            if mode != "single" and 1 in levels:
                row = levels[1]
                print(
                    f"  {mode}: detect {row['detect'] - base['detect']:+.1f} ms, "
                    f"enrich {row['enrich'] - base['enrich']:+.1f} ms"
                )


if __name__ == "__main__":
    main()
