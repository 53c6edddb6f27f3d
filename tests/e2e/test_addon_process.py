"""The real ``python -m addon_server`` process: starts on its embedded model, serves, stops."""

from __future__ import annotations

import contextlib
import json
import os
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

from tests.addon_server.conftest import SHARED_MODELS

BUS = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@contextlib.contextmanager
def running_addon(tmp_path: Path, **env: str) -> Iterator[str]:
    """Start the real add-on process, wait for /health, stop it with SIGTERM (exit 0)."""
    port = _free_port()
    full_env = {
        **os.environ,
        "PORT": str(port),
        "VIGIL_DATA_DIR": str(tmp_path / "data"),
        "HOST": "127.0.0.1",
        "VIGIL_MODELS_DIR": str(SHARED_MODELS),
        **env,
    }
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
        deadline = time.monotonic() + 90
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
        assert status == 200
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0


def _post(url: str, body: bytes, token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "image/jpeg"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=120) as resp:
        return dict(json.loads(resp.read()))


def test_addon_process_serves_bus_jpg(tmp_path: Path) -> None:
    token = "e2e-token"
    with running_addon(tmp_path, VIGIL_API_TOKEN=token, LLM_MODE="disabled") as base:
        health = json.loads(_get(f"{base}/health")[1])
        assert health["status"] == "healthy", health["issues"]
        assert health["models"][0]["name"] == "yolov3-tiny-coco"
        result = _post(f"{base}/v1/detect", BUS.read_bytes(), token)
        assert sum(d["class"] == "person" for d in result["detections"]) >= 3
        assert _get(f"{base}/v1/detect")[0] == 401  # the token is enforced


def test_event_survives_an_addon_restart(tmp_path: Path) -> None:
    """Default configuration (supervised SmolLM2): analyze, stop the process, start it again."""
    with running_addon(tmp_path) as base:
        for _ in range(300):
            health = json.loads(_get(f"{base}/health")[1])
            if health["llm"].get("ready"):
                break
            time.sleep(0.2)
        assert health["status"] == "healthy", health["issues"]
        event = _post(f"{base}/v1/analyze?camera=front_door", BUS.read_bytes())
        assert event["counts"]["person"] >= 3
        assert event["llm_status"] == "ok", event.get("llm_error")
    with running_addon(tmp_path, LLM_MODE="disabled") as base:
        status, body = _get(f"{base}/v1/events/{event['id']}")
        assert status == 200
        stored = json.loads(body)
        assert stored["risk_score"] == event["risk_score"]
        assert stored["factors"] == event["factors"]
        status, snapshot = _get(f"{base}/v1/events/{event['id']}/snapshot.jpg")
        assert status == 200
        assert snapshot[:3] == b"\xff\xd8\xff"
