"""A real Ray cluster on this machine for the scale-out tests: a head and "GPU hosts".

Everything runs inside a private network namespace (``unshare -rn``, loopback only): Ray
otherwise binds the machine's external address, and in its own namespace the cluster's ports
cannot collide with another Ray cluster on the machine. Nodes are stopped by process group and,
at the end, every process left in the namespace is killed: never ``ray stop`` (it kills every
Ray process on the machine, other users' too).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RAY = str(Path(sys.executable).with_name("ray"))
SERVE = str(Path(sys.executable).with_name("serve"))
GCS_PORT = 6379
DASHBOARD = "http://127.0.0.1:8265"
SERVE_URL = "http://127.0.0.1:8000/vigil"
NETNS_ENV = "VIGIL_PRIVATE_NETNS"


def in_private_netns() -> bool:
    return os.environ.get(NETNS_ENV) == "1"


def private_netns_command(argv: list[str]) -> list[str]:
    """``argv`` in a new user + network namespace with loopback up (no privileges needed)."""
    script = 'ip link set lo up && exec "$@"'
    return ["unshare", "-rn", "sh", "-c", script, "sh", *argv]


def sweep_namespace() -> int:
    """Kill every other process in this (private) network namespace; returns how many.

    Only processes this namespace's tests started can be in it, so nobody else's Ray dies.
    """
    if not in_private_netns():
        return 0
    mine = os.readlink("/proc/self/ns/net")
    me, killed = os.getpid(), 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "ns" / "net") == mine and int(entry.name) != os.getppid():
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
    }


@dataclass
class Cluster:
    """A head node and worker nodes, each a ``ray start --block`` process group of its own."""

    temp_dir: Path
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def _start(self, name: str, args: list[str]) -> None:
        log = (self.temp_dir.parent / f"{name}.log").open("ab")
        self.nodes[name] = subprocess.Popen(
            [RAY, "start", "--block", "--node-ip-address=127.0.0.1", *args],
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )

    def start_head(self) -> None:
        self._start(
            "head",
            [
                "--head",
                f"--port={GCS_PORT}",
                f"--temp-dir={self.temp_dir}",
                "--dashboard-host=127.0.0.1",
                "--num-cpus=4",
                "--num-gpus=0",
                "--disable-usage-stats",
            ],
        )
        wait_for(lambda: _get(f"{DASHBOARD}/api/version") is not None, 90, "the head")

    def start_host(self, name: str, gpus: int = 1) -> None:
        """A "GPU host": ``gpus`` (fake on CPU) and its own custom resource ``name``."""
        self._start(
            name,
            [
                f"--address=127.0.0.1:{GCS_PORT}",
                "--num-cpus=4",
                f"--num-gpus={gpus}",
                f"--resources={json.dumps({name: 1})}",
            ],
        )

    def alive_nodes(self) -> int:
        found = _get(f"{DASHBOARD}/nodes?view=summary")
        if found is None:
            return 0
        summary = found.get("data", {}).get("summary", [])
        return sum(1 for n in summary if n.get("raylet", {}).get("state") == "ALIVE")

    def kill(self, name: str) -> None:
        """The host is gone: SIGKILL its raylet and everything in its process group."""
        process = self.nodes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        raylets = subprocess.run(
            ["pgrep", "-f", f"raylet.*{name}"], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in raylets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    def stop(self) -> None:
        for name in list(self.nodes):
            process = self.nodes.pop(name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        sweep_namespace()

    def serve_deploy(self, config: Path) -> None:
        subprocess.run(
            [SERVE, "deploy", str(config), "--address", DASHBOARD],
            env=_env(),
            check=True,
            capture_output=True,
            cwd=REPO,
            timeout=120,
        )


def _get(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            found: dict[str, object] = json.loads(response.read())
            return found
    except (OSError, ValueError):
        return None


def wait_for(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} was not ready within {timeout_s:g} s")


@contextlib.contextmanager
def cluster(hosts: dict[str, int]) -> Iterator[Cluster]:
    """A head and one worker per ``hosts`` entry (name → fake GPU count), stopped at the end
    whatever happens."""
    base = Path(tempfile.mkdtemp(prefix="vr", dir="/tmp"))  # short: Ray's socket paths
    made = Cluster(base / "r")
    try:
        made.start_head()
        for count, (name, gpus) in enumerate(hosts.items(), start=2):
            made.start_host(name, gpus)  # one at a time: a busy GCS times out parallel starts
            wait_for(lambda n=count: made.alive_nodes() >= n, 150, f"the node {name}")
        yield made
    finally:
        made.stop()
        if not os.environ.get("VIGIL_KEEP_RAY_LOGS"):
            shutil.rmtree(base, ignore_errors=True)
