"""Can idle connections starve the add-on? (issue 12, item 8)

Starts the real ``python -m addon_server serve`` under an open-file limit (``ulimit -n``, 1024
by default), opens many idle, unauthenticated connections to it (1100 by default) and then
times ``GET /health`` on fresh connections. Prints, per checkout: how many idle connections
opened, how many the server closed, the server's open file descriptors, and how many /health
probes answered and how fast.

Usage::

    .venv-addon/bin/python benchmarks/idle_connections.py [--baseline REV] [--connections N]

``--baseline REV`` runs the same scenario first on ``git archive REV`` (e.g. 70a1817, before
the connection cap and timeouts), so one command prints before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
PROBES = 20
PROBE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _checkout(rev: str) -> Iterator[Path]:
    """The tree of ``rev`` in a temporary directory."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"the add-on exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/health") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError("the add-on never became healthy")


async def _idle(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError):
        return None


async def _probe(url: str) -> float | None:
    """Seconds for one /health on a fresh connection; None when it fails or times out."""
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    connector = aiohttp.TCPConnector(force_close=True)
    started = time.perf_counter()
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
            session.get(f"{url}/health") as resp,
        ):
            await resp.read()
            return time.perf_counter() - started if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def scenario(source: Path, label: str, connections: int, fd_limit: int) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        env = {
            **os.environ,
            "PORT": str(port),
            "VIGIL_DATA_DIR": data,
            "LLM_MODE": "disabled",
            "LOG_LEVEL": "ERROR",
        }
        proc = subprocess.Popen(
            # exec: the add-on is the shell's process, under the limit.
            [
                "bash",
                "-c",
                f'ulimit -n {fd_limit} && exec "$0" -m addon_server serve',
                sys.executable,
            ],
            cwd=source,  # the checkout's addon_server comes first on sys.path
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            await _wait_healthy(url, proc)
            before = await _probe(url)
            fds_idle = _open_fds(proc.pid)
            flood = time.perf_counter()
            opened = [
                c
                for batch in range(0, connections, 100)
                for c in await asyncio.gather(
                    *(_idle(port) for _ in range(min(100, connections - batch)))
                )
                if c is not None
            ]
            await asyncio.sleep(1)
            fds_loaded = _open_fds(proc.pid)
            timeline = []
            for _ in range(PROBES):
                timeline.append((time.perf_counter() - flood, await _probe(url)))
            answered = [r for _, r in timeline if r is not None]
            closed = sum(1 for reader, _ in opened if reader.at_eof())
            print(f"--- {label} ({source}) ---")
            print(f"/health before the idle connections: {_ms(before)}")
            print(
                f"idle connections: {len(opened)} of {connections} opened, "
                f"{closed} closed by the server by the end; server fds {fds_idle} -> "
                f"{fds_loaded} (limit {fd_limit})"
            )
            summary = f"/health with them open: {len(answered)}/{PROBES} answered"
            if answered:
                summary += (
                    f", p50 {statistics.median(answered) * 1000:.1f} ms, "
                    f"max {max(answered) * 1000:.1f} ms"
                )
            print(summary)
            print(
                "probes (s after the flood began: result): "
                + ", ".join(f"{at:.0f}: {_ms(r)}" for at, r in timeline)
            )
            for _, writer in opened:
                writer.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ms(seconds: float | None) -> str:
    return "no answer" if seconds is None else f"{seconds * 1000:.1f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--fd-limit", type=int, default=1024)
    parser.add_argument("--baseline", help="a git revision to run first, e.g. 70a1817")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.connections + 256  # this client holds every idle connection open
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise SystemExit(f"the client needs {wanted} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    if args.baseline:
        with _checkout(args.baseline) as old:
            await scenario(old, f"before ({args.baseline})", args.connections, args.fd_limit)
    await scenario(ROOT, "after (this checkout)", args.connections, args.fd_limit)


if __name__ == "__main__":
    asyncio.run(main())
