"""What the process benchmarks share: starting the add-on from a checkout and waiting for it."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parents[1]


def add_source_argument(parser: argparse.ArgumentParser) -> None:
    """``--source CHECKOUT``: whose ``addon_server`` to start (e.g. a worktree of an old commit)."""
    parser.add_argument(
        "--source",
        type=Path,
        default=HERE,
        help="checkout whose addon_server is started (default: this one)",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_healthy(
    session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120
) -> None:
    """Poll ``/health`` until it answers 200; fail at once if the process exits first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the add-on exited with {proc.returncode} while starting")
        try:
            async with session.get(f"{url}/health") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.3)
    raise RuntimeError(f"the add-on did not answer /health within {timeout_s:.0f} s")


def start_addon(
    source: Path, data: str, port: int, *, stderr: int | None = None
) -> subprocess.Popen[bytes]:
    """``python -m addon_server serve`` of ``source``'s code, rules only, in ``data``.

    ``data`` is the working directory (a ``vigil.yaml`` there is read) and the data dir.
    """
    env = {
        **os.environ,
        "PYTHONPATH": str(source),
        "PORT": str(port),
        "VIGIL_DATA_DIR": data,
        "LLM_MODE": "disabled",
        "LOG_LEVEL": "ERROR",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "addon_server", "serve"], env=env, cwd=data, stderr=stderr
    )
