"""Bursts of simultaneous /v1/analyze calls with frames of different sizes, on the real add-on.

Starts ``python -m addon_server serve`` (embedded yolov3-tiny, faceres re-ID, LLM disabled) from
this checkout, then sends ``--bursts`` bursts of ``--calls`` simultaneous analyses: bus.jpg
(810x1080) and zidane.jpg (1280x720) alternating over three cameras, as cameras of different
resolutions triggering together do. A crashed add-on is started again for the next burst.
Prints, per burst, the status codes and whether the process died (and with which signal), then
the totals: the figures for issue 12 item 1 (a shared Haar cascade gave 500s and SIGSEGV).

Usage: ``.venv-addon/bin/python benchmarks/analyze_burst.py [--bursts 5] [--calls 6]
[--max-concurrent N] [--source CHECKOUT]``. ``--max-concurrent`` sets ``analysis.max_concurrent``
(checkouts after 70a1817) so that more analyses than the default two overlap.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import subprocess
import tempfile
from pathlib import Path

import aiohttp
import ultralytics
from addon_process import add_source_argument, free_port, start_addon, wait_healthy

ASSETS = Path(ultralytics.__file__).parent / "assets"
IMAGES = [(ASSETS / name).read_bytes() for name in ("bus.jpg", "zidane.jpg")]
CAMERAS = ("front_door", "garden", "garage")


async def _one(session: aiohttp.ClientSession, url: str, index: int) -> str:
    try:
        async with session.post(
            f"{url}/v1/analyze",
            params={"camera": CAMERAS[index % len(CAMERAS)], "llm": "false"},
            data=IMAGES[index % len(IMAGES)],
            headers={"Content-Type": "image/jpeg"},
        ) as resp:
            await resp.read()
            return str(resp.status)
    except aiohttp.ClientError:
        return "no answer"


async def run(bursts: int, calls: int, source: Path, max_concurrent: int | None) -> None:
    statuses: collections.Counter[str] = collections.Counter()
    crashes = 0
    proc: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory() as data:
        if max_concurrent is not None:  # read from the working directory as ./vigil.yaml
            config = f"analysis: {{max_concurrent: {max_concurrent}}}\n"
            (Path(data) / "vigil.yaml").write_text(config, encoding="utf-8")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                for burst in range(bursts):
                    if proc is None or proc.poll() is not None:
                        proc = start_addon(source, data, port, stderr=subprocess.DEVNULL)
                        await wait_healthy(session, url, proc)
                    answers = await asyncio.gather(*(_one(session, url, i) for i in range(calls)))
                    statuses.update(answers)
                    await asyncio.sleep(0.5)
                    died = proc.poll()
                    if died is not None:
                        crashes += 1
                    death = "" if died is None else f"  add-on died: {_signal_name(died)}"
                    print(f"burst {burst + 1}: {' '.join(answers)}{death}", flush=True)
            finally:
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=30)
    total = bursts * calls
    failed = total - statuses["200"]
    print(
        f"\n{bursts} bursts x {calls} calls = {total}: {statuses['200']} ok, "
        f"{sum(n for s, n in statuses.items() if s.startswith('5'))} 5xx, "
        f"{statuses['no answer']} unanswered, {failed} failed ({100 * failed / total:.0f} %); "
        f"add-on crashed in {crashes} of {bursts} bursts"
    )


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        return signal.Signals(-returncode).name
    return f"exit {returncode}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--calls", type=int, default=6)
    parser.add_argument("--max-concurrent", type=int, default=None)
    add_source_argument(parser)
    args = parser.parse_args()
    asyncio.run(run(args.bursts, args.calls, args.source, args.max_concurrent))


if __name__ == "__main__":
    main()
