"""Runs cluster_cases.py inside a private network namespace (``unshare -rn``, loopback only).

Ray binds the machine's external address unless it has nothing else; a user + network
namespace needs no privileges and gives the cluster a loopback of its own, so its ports cannot
meet another Ray cluster on the machine. The cases' own output is shown on failure.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.addon_server.scale.cluster import NETNS_ENV, REPO, _env, private_netns_command

pytestmark = pytest.mark.slow


def test_vigil_on_a_three_node_ray_cluster() -> None:
    command = private_netns_command(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:warnings",
            "--tb=short",
            "-x",
            str(REPO / "tests" / "addon_server" / "scale" / "cluster_cases.py"),
        ]
    )
    done = subprocess.run(
        command,
        env={**_env(), NETNS_ENV: "1"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-12000:]
    # Every case ran (none skipped: outside the namespace they all skip).
    assert re.search(r"\b\d+ passed", output) and "skipped" not in output, output[-4000:]
