"""Vigil's serving path against NVIDIA Triton (PyTriton), one run on one machine.

(a) A null model, per-request machinery alone, at concurrency 1 and 16 (inferences/s):
    * Vigil: a subprocess serving the add-on's own app (``create_app``: auth and error
      middleware, the server module's connection handling, metrics) with one extra route,
      ``POST /bench/null``, that sends the body through the add-on's DynamicBatcher to a
      detector that finds nothing and answers the body back. Nothing of the detect route's
      image decoding is in it: it is the path a request takes around a model.
    * Triton: PyTriton's ``null`` model (returns its input) with dynamic batching, over
      Triton's HTTP/REST binary-tensor protocol.
    Both get the same 4 KiB FP32 payload from the same aiohttp client, and both batchers the
    same queue delay (none). Goal: Vigil ≥ 2×.
(b) The embedded yolov3-tiny on ultralytics' bus.jpg, images/s and p50:
    * in-process ``detect_batch`` (batch 1; and batch 8 for throughput), and decoding the
      JPEG + ``detect_batch`` per image (the work of a request without HTTP); measured before
      and after the served runs, the mean reported;
    * served by Vigil: the real ``python -m addon_server serve`` over /v1/detect;
    * through Triton: the same add-on with ``TRITON_ENABLED=true`` (the ``triton`` backend,
      gRPC) in front of PyTriton serving the same detector.
    Goal: Vigil-served ≥ 0.9× in-process (the best of concurrency 1 and 8 against the best of
    batch 1 and 8: the add-on autotunes its batch size); the Triton path's overhead is
    reported against Vigil-served.

Usage: ``.venv-addon/bin/python benchmarks/vs_triton.py [--seconds S]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
import numpy as np
import ultralytics
from addon_process import free_port, wait_healthy

from addon_server.config import parse
from addon_server.detector import load_detector
from addon_server.detector.base import Detection
from addon_server.detector.triton_serve import NULL_MODEL, NULL_TENSOR, ServerProcess
from addon_server.imaging import BGRImage, decode

REPO = Path(__file__).resolve().parents[1]
BUS = (Path(ultralytics.__file__).parent / "assets" / "bus.jpg").read_bytes()
PAYLOAD = np.arange(1024, dtype=np.float32)
NULL_ROUTE = "/bench/null"
NULL_QUEUE_DELAY_US = 0
"""Both batchers' queue delay in (a): a wait for a fuller batch buys a null model nothing, and
at concurrency 1 it would measure the delay, not the machinery."""


class NullDetector:
    """Finds nothing, at once: what is left of a request is the serving machinery."""

    name = "null"
    backend = "null"
    device = "cpu"
    class_names: tuple[str, ...] = ("person",)

    def detect_batch(self, images: Sequence[BGRImage]) -> list[list[Detection]]:
        return [[] for _ in images]

    def memory_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass


def serve_vigil_null(port: int, data_dir: str) -> None:
    """The child process of (a): the add-on's app with the null route, on ``port``."""
    from aiohttp import web

    from addon_server.app import create_app
    from addon_server.server import serve
    from addon_server.services import SERVICES_KEY

    settings = parse(
        {
            "server": {"port": port, "data_dir": data_dir, "log_level": "WARNING"},
            "detector": {"warmup": False},
            "batching": {"max_queue_delay_us": NULL_QUEUE_DELAY_US},
            "llm": {"mode": "disabled"},
            "reid": {"enabled": False},
        },
        environ={},
    )
    app = create_app(settings, detector=NullDetector())

    async def null(request: web.Request) -> web.Response:
        body = await request.read()
        batcher = request.app[SERVICES_KEY].detection.batcher
        assert batcher is not None
        await batcher.infer(np.frombuffer(body, dtype=np.uint8).reshape(1, -1, 1))
        return web.Response(body=body, content_type="application/octet-stream")

    app.router.add_post(NULL_ROUTE, null)
    serve(app, settings.server)


Call = Callable[[aiohttp.ClientSession], Awaitable[None]]


async def measure(
    session: aiohttp.ClientSession, call: Call, concurrency: int, seconds: float
) -> tuple[float, float]:
    """Run ``call`` from ``concurrency`` workers for ``seconds``: (per second, p50 ms)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call(session)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, statistics.median(latencies) * 1000


def vigil_null_call(url: str) -> Call:
    body = PAYLOAD.tobytes()

    async def call(session: aiohttp.ClientSession) -> None:
        async with session.post(url + NULL_ROUTE, data=body) as resp:
            got = await resp.read()
            if resp.status != 200 or got != body:
                raise RuntimeError(f"Vigil null route: HTTP {resp.status}")

    return call


def triton_null_call(url: str) -> Call:
    """One KServe v2 inference with the binary-tensor extension (what tritonclient.http does)."""
    raw = PAYLOAD.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": NULL_TENSOR,
                    "shape": [1, PAYLOAD.size],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": NULL_TENSOR, "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    body = header + raw

    async def call(session: aiohttp.ClientSession) -> None:
        async with session.post(
            f"{url}/v2/models/{NULL_MODEL}/infer", data=body, headers=headers
        ) as resp:
            got = await resp.read()
            if resp.status != 200 or not got.endswith(raw):
                raise RuntimeError(f"Triton null model: HTTP {resp.status}: {got[:200]!r}")

    return call


def detect_call(url: str) -> Call:
    async def call(session: aiohttp.ClientSession) -> None:
        async with session.post(
            f"{url}/v1/detect", data=BUS, headers={"Content-Type": "image/jpeg"}
        ) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"/v1/detect: HTTP {resp.status}")

    return call


def in_process(seconds: float) -> dict[str, tuple[float, float]]:
    """``detect_batch`` on pixels decoded once (batch 1 and 8), and decode + detect per image:
    the work a request adds before the detector, without HTTP."""
    detector = load_detector(parse({}, environ={}).detector, "cpu")
    image = decode(BUS, max_pixels=10**8, min_side=416).pixels  # as /v1/detect decodes it
    detector.detect_batch([image])  # warm-up
    runs: dict[str, tuple[int, Callable[[], object]]] = {
        "batch 1": (1, lambda: detector.detect_batch([image])),
        "batch 8": (8, lambda: detector.detect_batch([image] * 8)),
        "decode + batch 1": (
            1,
            lambda: detector.detect_batch([decode(BUS, max_pixels=10**8, min_side=416).pixels]),
        ),
    }
    results: dict[str, tuple[float, float]] = {}
    for what, (size, run_once) in runs.items():
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            run_once()
            latencies.append(time.perf_counter() - t0)
        rate = len(latencies) * size / (time.perf_counter() - started)
        results[what] = (rate, statistics.median(latencies) * 1000)
    detector.close()
    return results


def start_addon(port: int, data: str, **env: str) -> subprocess.Popen[bytes]:
    """The real add-on on the embedded detector, configured as shipped (autotune on)."""
    environ = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PORT": str(port),
        "VIGIL_DATA_DIR": data,
        "LLM_MODE": "disabled",
        "LOG_LEVEL": "ERROR",
        **env,
    }
    return subprocess.Popen([sys.executable, "-m", "addon_server", "serve"], env=environ, cwd=data)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=60)


async def run(seconds: float) -> None:
    rows: list[tuple[str, str, float, float]] = []

    def row(part: str, what: str, rate: float, p50: float) -> None:
        rows.append((part, what, rate, p50))
        print(f"{part} {what:<44} {rate:8.1f}/s  p50 {p50:7.1f} ms", flush=True)

    scratch = tempfile.TemporaryDirectory()
    root = Path(scratch.name)
    ports = [free_port() for _ in range(3)]
    triton = ServerProcess(
        root / "pytriton",
        grpc_port=ports[0],
        http_port=ports[1],
        metrics_port=ports[2],
        extra=("--null", "--max-queue-delay-us", str(NULL_QUEUE_DELAY_US)),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    triton.start()
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=64)
    ) as session:
        try:
            await asyncio.to_thread(triton.wait_ready, 300)
            # (a) null model
            port = free_port()
            (root / "null").mkdir()
            vigil = subprocess.Popen(
                [sys.executable, __file__, "--serve-null", str(port), str(root / "null")],
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            try:
                url = f"http://127.0.0.1:{port}"
                await wait_healthy(session, url, vigil)
                for name, call in (
                    ("Vigil  null route (add-on app + batcher)", vigil_null_call(url)),
                    (
                        "Triton null model (PyTriton, HTTP)",
                        triton_null_call(f"http://127.0.0.1:{triton.http_port}"),
                    ),
                ):
                    await measure(session, call, 4, 1.0)  # warm-up
                    for concurrency in (1, 16):
                        rate, p50 = await measure(session, call, concurrency, seconds)
                        row("(a)", f"{name} c={concurrency}", rate, p50)
            finally:
                stop(vigil)
            # (b) the detector
            before = in_process(seconds)
            for name, env in (
                ("Vigil-served /v1/detect", {}),
                (
                    "through Triton /v1/detect (backend triton, grpc)",
                    {"TRITON_ENABLED": "true", "TRITON_URL": f"127.0.0.1:{triton.grpc_port}"},
                ),
            ):
                port = free_port()
                data = root / f"addon-{port}"
                data.mkdir()
                addon = start_addon(port, str(data), **env)
                try:
                    url = f"http://127.0.0.1:{port}"
                    await wait_healthy(session, url, addon)
                    await measure(session, detect_call(url), 4, 1.0)  # warm-up
                    for concurrency in (1, 8):
                        rate, p50 = await measure(session, detect_call(url), concurrency, seconds)
                        row("(b)", f"{name} c={concurrency}", rate, p50)
                finally:
                    stop(addon)
            # This shared machine's speed drifts: measure in-process again after the served
            # runs and report the mean of both, not one lucky or unlucky reading.
            after = in_process(seconds)
            for what, (rate, p50) in before.items():
                rate2, p50b = after[what]
                print(f"    in-process {what}: {rate:.1f}/s before, {rate2:.1f}/s after")
                row("(b)", f"in-process detect_batch, {what}", (rate + rate2) / 2, (p50 + p50b) / 2)
        finally:
            triton.stop()
            scratch.cleanup()
    summary(rows)


def summary(rows: list[tuple[str, str, float, float]]) -> None:
    rate = {what: r for _, what, r, _ in rows}
    print()
    print(f"{'':4}{'what':<52}{'per s':>9}{'p50 ms':>9}")
    for part, what, r, p50 in rows:
        print(f"{part:<4}{what:<52}{r:9.1f}{p50:9.1f}")
    print()
    for c in (1, 16):
        vigil = rate[f"Vigil  null route (add-on app + batcher) c={c}"]
        tri = rate[f"Triton null model (PyTriton, HTTP) c={c}"]
        verdict = "meets" if vigil >= 2 * tri else "misses"
        print(f"(a) c={c:<2} Vigil / Triton null = {vigil / tri:.2f} ({verdict} the 2x goal)")
    served = max(rate[f"Vigil-served /v1/detect c={c}"] for c in (1, 8))
    local = max(rate[f"in-process detect_batch, batch {b}"] for b in (1, 8))
    verdict = "meets" if served >= 0.9 * local else "misses"
    print(
        f"(b) Vigil-served best / in-process best = {served / local:.2f} ({verdict} the 0.9 goal)"
    )
    decoding = rate["in-process detect_batch, decode + batch 1"]
    print(f"(b) Vigil-served best / in-process decode + detect = {served / decoding:.2f}")
    for c in (1, 8):
        v = rate[f"Vigil-served /v1/detect c={c}"]
        t = rate[f"through Triton /v1/detect (backend triton, grpc) c={c}"]
        print(f"(b) c={c}: the Triton path gives {t / v:.2f}x Vigil-served's images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument(
        "--serve-null", nargs=2, metavar=("PORT", "DATA_DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_null:
        serve_vigil_null(int(args.serve_null[0]), args.serve_null[1])
        return
    print(f"machine: {os.cpu_count()} CPUs; detector yolov3-tiny-coco (OpenCV DNN, cpu)")
    asyncio.run(run(args.seconds))


if __name__ == "__main__":
    main()
