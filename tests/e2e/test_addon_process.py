"""The real ``python -m addon_server`` process: starts on its embedded model, serves, stops."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ultralytics

from tests.addon_server.conftest import SHARED_MODELS, addon_process_env

BUS = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
START_TIMEOUT_S = 300
"""Catches a hang, not slowness: a busy 2-core machine may take a minute to import and load."""
HTTP_TIMEOUT_S = 120
"""Per request; the slowest (analyze with the LLM) is bounded by the LLM's own timeout."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@contextlib.contextmanager
def running_addon(tmp_path: Path, **env: str) -> Iterator[str]:
    """Start the real add-on process, wait for /health, stop it with SIGTERM (exit 0)."""
    port = _free_port()
    full_env = addon_process_env(
        PORT=str(port),
        VIGIL_DATA_DIR=str(tmp_path / "data"),
        HOST="127.0.0.1",
        VIGIL_MODELS_DIR=str(SHARED_MODELS),  # absent on a fresh clone: re-ID is then off
        **env,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "addon_server"],
        env=full_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        status = 0
        while time.monotonic() < deadline:
            try:
                status, _ = _get(f"{base}/health")
                if status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.3)
        assert status == 200, f"no /health within {START_TIMEOUT_S} s"
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0


def _post(url: str, body: bytes, token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "image/jpeg"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
        return dict(json.loads(resp.read()))


def _expected_issues() -> list[tuple[str, str | None]]:
    """The default configuration's only issue without the face model: re-ID not installed."""
    if (SHARED_MODELS / "faceres.onnx").is_file():
        return []
    return [("model_not_installed", "faceres")]


def test_addon_process_serves_bus_jpg(tmp_path: Path) -> None:
    token = "e2e-token"
    with running_addon(tmp_path, VIGIL_API_TOKEN=token, LLM_MODE="disabled") as base:
        health = json.loads(_get(f"{base}/health")[1])
        warnings = [i for i in health["issues"] if i["severity"] == "warning"]
        assert [(i["code"], i.get("model")) for i in warnings] == _expected_issues()
        assert health["status"] == ("degraded" if _expected_issues() else "healthy")
        assert health["models"][0]["name"] == "yolov3-tiny-coco"
        result = _post(f"{base}/v1/detect", BUS.read_bytes(), token)
        assert sum(d["class"] == "person" for d in result["detections"]) >= 3
        assert _get(f"{base}/v1/detect")[0] == 401  # the token is enforced


def test_event_survives_an_addon_restart(tmp_path: Path) -> None:
    """Default configuration (supervised SmolLM2, asked never by default): analyze, stop the
    process, start it again; the stored event is the one answered."""
    with running_addon(tmp_path) as base:
        event = _post(f"{base}/v1/analyze?camera=front_door", BUS.read_bytes())
        assert event["counts"]["person"] >= 3
    with running_addon(tmp_path, LLM_MODE="disabled") as base:
        status, body = _get(f"{base}/v1/events/{event['id']}")
        assert status == 200
        stored = json.loads(body)
        # The stored event is the answer, plus its history (one revision: the LLM is off by
        # default, so the rules' verdict is final).
        history = {"timings_ms", "revisions"}
        assert {k: v for k, v in stored.items() if k not in history} == {
            k: v for k, v in event.items() if k not in history
        }
        assert [r["revision"] for r in stored["revisions"]] == [1]
        assert stored["revisions"][0]["risk_score"] == event["risk_score"]
        status, snapshot = _get(f"{base}/v1/events/{event['id']}/snapshot.jpg")
        assert status == 200
        assert snapshot[:3] == b"\xff\xd8\xff"
