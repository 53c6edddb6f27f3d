"""What ``ray.detector_fallback: local`` costs: the fallback detector's memory and latency.

``BACKEND=ray`` pointed at a loopback port where nothing listens (the cluster is gone): the
detector is built as the add-on builds it, so its ``/classes`` call is refused and the
embedded yolov3-tiny is loaded on the CPU. Prints the load time, the model's accounted bytes
and the process' RSS growth, then the per-image latency on ultralytics' bus.jpg (p50/p95 of
``--runs``), and how long a known-down stage costs a request (``retry_s`` not yet passed:
no network call at all).

Usage: ``.venv-addon/bin/python benchmarks/ray_fallback.py [--runs 20]``
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

import cv2
import ultralytics

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from addon_server.config import parse  # noqa: E402
from addon_server.detector import load_detector  # noqa: E402

MB = 1024**2


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{dead_port()}/vigil"
    settings = parse({"detector": {"backend": "ray"}, "ray": {"serve_url": url}}, environ={})
    image = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "bus.jpg"))
    before, started = rss_bytes(), time.perf_counter()
    detector = load_detector(settings.detector, "cpu")
    load_s = time.perf_counter() - started
    print(f"fallback {detector.name}: loaded in {load_s:.2f} s (the refused /classes included)")
    print(
        f"  accounted {detector.memory_bytes() / MB:.1f} MB, "
        f"RSS +{(rss_bytes() - before) / MB:.1f} MB"
    )
    detector.detect_batch([image])  # warm-up
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        found = detector.detect_batch([image])
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
    print(
        f"  bus.jpg: p50 {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, "
        f"{len(found[0])} boxes, {args.runs} runs (no cluster call: within retry_s)"
    )
    detector.close()


if __name__ == "__main__":
    main()
