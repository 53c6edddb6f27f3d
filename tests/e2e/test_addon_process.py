"""The real ``python -m addon_server`` process: starts on its embedded model, serves, stops."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

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


def test_addon_process_serves_bus_jpg(tmp_path: Path) -> None:
    port = _free_port()
    token = "e2e-token"
    env = {
        **os.environ,
        "PORT": str(port),
        "VIGIL_API_TOKEN": token,
        "VIGIL_DATA_DIR": str(tmp_path / "data"),
        "HOST": "127.0.0.1",
        "VIGIL_MODELS_DIR": str(SHARED_MODELS),
        "LLM_MODE": "disabled",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "addon_server"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        status, body = 0, b""
        while time.monotonic() < deadline:
            try:
                status, body = _get(f"{base}/health")
                if status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.3)
        assert status == 200
        health = json.loads(body)
        assert health["status"] == "healthy", health["issues"]
        assert health["models"][0]["name"] == "yolov3-tiny-coco"

        request = urllib.request.Request(
            f"{base}/v1/detect",
            data=BUS.read_bytes(),
            method="POST",
            headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            result = json.loads(resp.read())
        assert sum(d["class"] == "person" for d in result["detections"]) >= 3
        assert _get(f"{base}/v1/detect")[0] == 401  # the token is enforced
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0
