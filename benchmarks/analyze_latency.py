"""End-to-end /v1/analyze latency split by stage, on the real add-on process.

Starts ``python -m addon_server`` (embedded yolov3-tiny, faceres re-ID, supervised SmolLM2),
waits until the LLM is ready, then sends ultralytics' bus.jpg and zidane.jpg one request at a
time, with the LLM and with rules only. Prints p50/p95 of the client's round trip and of every
stage the add-on reports in ``timings_ms`` (decode, detect, reid, reason (rules + llm),
annotate, store), so it shows where an event's time goes.

Usage: ``.venv-addon/bin/python benchmarks/analyze_latency.py [--requests N]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import aiohttp
import ultralytics

ASSETS = Path(ultralytics.__file__).parent / "assets"
IMAGES = {name: (ASSETS / name).read_bytes() for name in ("bus.jpg", "zidane.jpg")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(requests: int) -> None:
    port = _free_port()
    data = tempfile.TemporaryDirectory()
    env = {**os.environ, "PORT": str(port), "VIGIL_DATA_DIR": data.name, "LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "addon_server"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            for _ in range(600):
                try:
                    async with session.get(f"{url}/health") as resp:
                        health = await resp.json()
                        if health["llm"].get("ready"):
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError("the add-on or its LLM did not become ready")
            print(
                f"add-on ready: models {[m['name'] for m in health['models']]}, "
                f"llm {health['llm'].get('state')}"
            )
            for use_llm in ("true", "false"):
                stages: dict[str, list[float]] = defaultdict(list)
                statuses: dict[str, int] = defaultdict(int)
                for i in range(requests + 1):
                    name = list(IMAGES)[i % len(IMAGES)]
                    started = time.perf_counter()
                    async with session.post(
                        f"{url}/v1/analyze",
                        params={"camera": "bench", "llm": use_llm},
                        data=IMAGES[name],
                        headers={"Content-Type": "image/jpeg"},
                    ) as resp:
                        event = await resp.json()
                    if i == 0:
                        continue  # warm-up
                    stages["round trip"].append((time.perf_counter() - started) * 1000)
                    for stage, ms in event["timings_ms"].items():
                        stages[stage].append(ms)
                    statuses[event["llm_status"]] += 1
                print(f"\nllm={use_llm}: {requests} requests, llm_status {dict(statuses)}")
                for stage, values in stages.items():
                    print(
                        f"  {stage:<13} p50 {statistics.median(values):8.1f} ms   "
                        f"p95 {_pct(values, 0.95):8.1f} ms"
                    )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        data.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps({"cpus": os.cpu_count()}))
    asyncio.run(run(args.requests))


if __name__ == "__main__":
    main()
