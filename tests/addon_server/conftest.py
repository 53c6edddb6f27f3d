"""Shared fixtures: real photos, real weights, and the real app on a loopback test server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ultralytics
from PIL import Image

from addon_server.config import Settings, parse
from addon_server.detector import load_detector
from addon_server.detector.base import Detector

ASSETS = Path(ultralytics.__file__).parent / "assets"
REPO = Path(__file__).resolve().parents[2]
SHARED_MODELS = Path(
    os.environ.get("VIGIL_SHARED_MODELS")
    or os.environ.get("VIGIL_MODELS_DIR")
    or REPO.parent / "shared" / "models"
)
"""The pretrained ONNX files (face re-ID): VIGIL_SHARED_MODELS, else the add-on's own
VIGIL_MODELS_DIR, else ../shared/models beside the checkout. A fresh clone may not have them."""
MODELS_README = "README.md, section 'Face re-identification models'"


def needs_shared_models(*files: str) -> pytest.MarkDecorator:
    """Skip a test that needs these files of SHARED_MODELS, naming the first one missing.

    The add-on itself runs without them (re-ID off, reported in /health); only tests of re-ID
    need them, and a fresh clone without ../shared/models should see why they were skipped
    (``pytest -ra`` lists the reason) rather than a FileNotFoundError.
    """
    missing = [SHARED_MODELS / name for name in files if not (SHARED_MODELS / name).is_file()]
    return pytest.mark.skipif(
        bool(missing),
        reason=f"needs {missing[0] if missing else ''} (pretrained face model, not in the "
        "repository): point VIGIL_MODELS_DIR (or VIGIL_SHARED_MODELS) at the folder that "
        f"holds it; see {MODELS_README}",
    )


def addon_process_env(**env: str) -> dict[str, str]:
    """The environment for a ``python -m addon_server`` child: this checkout's code first.

    The child runs in a temporary cwd, where an editable install of another checkout would
    otherwise win over the code under test.
    """
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **env}


def free_ports(count: int) -> list[int]:
    """Loopback ports free now, all different (held together while they are picked)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")


@pytest.fixture(scope="session")
def bus_jpg() -> bytes:
    return (ASSETS / "bus.jpg").read_bytes()


@pytest.fixture(scope="session")
def zidane_jpg() -> bytes:
    return (ASSETS / "zidane.jpg").read_bytes()


def _to_jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def zidane_4x_png(zidane_jpg: bytes) -> bytes:
    """zidane.jpg enlarged 4x (5120x2880) by pixel repetition: 14.7 Mpx in a small PNG.

    Reduced 4x again by area averaging it is exactly the photo, so a bounded-size analysis of
    it must find what the photo gives, scaled by 4.
    """
    large = (
        Image.open(io.BytesIO(zidane_jpg))
        .convert("RGB")
        .resize((5120, 2880), Image.Resampling.NEAREST)
    )
    buffer = io.BytesIO()
    large.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def coffee_jpg() -> bytes:
    from skimage import data

    return _to_jpeg(data.coffee())


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Settings from a YAML-shaped document; the environment does not leak in."""

    def factory(document: dict[str, Any] | None = None, **env: str) -> Settings:
        doc: dict[str, Any] = {
            "server": {"data_dir": str(tmp_path / "data")},
            # The LLM has its own tests; elsewhere rules-only keeps each app light.
            "llm": {"mode": "disabled"},
            "reid": {"models_dir": str(SHARED_MODELS)},
        }
        for key, value in (document or {}).items():
            doc.setdefault(key, {}).update(value)
        return parse(doc, environ=env)

    return factory


@pytest.fixture(scope="session")
def darknet_detector() -> Iterator[Detector]:
    """The embedded yolov3-tiny, loaded once for the whole session (real weights)."""
    detector = load_detector(parse({}, environ={}).detector, "cpu")
    yield detector
    detector.close()


HANG_TIMEOUT_S = 120.0
"""How long a test waits for something that must happen: only a hang, never slowness, trips it."""


LLM_HANG_TIMEOUT_S = 300.0
"""The bound on the real LLM's work in tests (an answer, a model load): seconds here, minutes
only when it hangs, whatever else the machine is running."""

LLM_HANG_GUARDS: dict[str, float] = {
    "timeout_s": LLM_HANG_TIMEOUT_S,
    "ready_timeout_s": LLM_HANG_TIMEOUT_S,
    "connect_timeout_s": 60.0,  # the most config.py allows
    # A probe is answered in milliseconds; three misses in a row restart the server, so only a
    # test of the liveness probe itself may make it strict.
    "probe_timeout_s": 60.0,
}
"""LLM settings for tests that need the real LLM's answer: each bound is a hang guard, so a
busy machine makes an answer slow, never a fallback (``timeout_s`` and friends are what the
event's ``llm_status`` depends on)."""


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Wait until ``predicate()`` holds: synchronise on the state, not on a guessed sleep."""
    deadline = time.monotonic() + HANG_TIMEOUT_S
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {HANG_TIMEOUT_S:.0f} s"
        await asyncio.sleep(0.01)


class CountingDetector:
    """Wraps a real detector to count forward passes and, optionally, hold them at a gate.

    A held pass is released after HANG_TIMEOUT_S at the latest, so a test that blocks the event
    loop by mistake fails instead of hanging.
    """

    def __init__(self, inner: Detector) -> None:
        import threading

        self.inner = inner
        self.name = inner.name
        self.backend = inner.backend
        self.device = inner.device
        self.class_names = inner.class_names
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def detect_batch(self, images: Any) -> Any:
        self.entered.set()
        self.gate.wait(timeout=HANG_TIMEOUT_S)
        self.calls.append(len(images))
        return self.inner.detect_batch(images)

    def memory_bytes(self) -> int:
        return self.inner.memory_bytes()

    def close(self) -> None:  # the session fixture owns the real model
        pass


@pytest.fixture
def counting_detector(darknet_detector: Detector) -> CountingDetector:
    return CountingDetector(darknet_detector)


@pytest.fixture
def llm_requests(monkeypatch: pytest.MonkeyPatch) -> list[Mapping[str, Any]]:
    """The chat-completion bodies the LLM client was asked to send, appended as it is asked.

    A test that acts while a completion is in flight (kills the server under it) waits for an
    entry here instead of sleeping for a guessed detection or generation time; the request
    still goes to the real server. A test of a shortcut (no request at all) checks it stays
    empty.
    """
    from addon_server.reasoning.llm import LLMClient

    requests: list[Mapping[str, Any]] = []
    send = LLMClient.chat_raw

    async def spy(self: LLMClient, body: Mapping[str, Any]) -> dict[str, Any]:
        requests.append(body)
        return await send(self, body)

    monkeypatch.setattr(LLMClient, "chat_raw", spy)
    return requests


def persons(body: dict[str, Any]) -> int:
    return sum(1 for d in body["detections"] if d["class"] == "person")


@contextlib.contextmanager
def llama_server(*args: str) -> Iterator[int]:
    """A real llama.cpp server (llama-cpp-python's, with the embedded SmolLM2) on a free
    loopback port, started by the test itself rather than by the add-on's supervisor."""
    from addon_server.reasoning.reasoner import embedded_model_path
    from addon_server.reasoning.supervisor import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(embedded_model_path()),
            "--host", "127.0.0.1", "--port", str(port),
            "--n_threads", "2", "--verbose", "false", *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
            "OMP_WAIT_POLICY": "PASSIVE",
        },
    )  # fmt: skip
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_serving(url: str, api_key: str | None = None) -> None:
    """Return once the OpenAI-compatible server at ``url`` lists its models."""
    from addon_server.reasoning.llm import LLMClient, LLMClientConfig

    deadline = time.monotonic() + LLM_HANG_TIMEOUT_S
    async with LLMClient(url, LLMClientConfig(api_key=api_key)) as client:
        while True:
            with contextlib.suppress(Exception):
                if await client.list_models(HANG_TIMEOUT_S):
                    return
            assert time.monotonic() < deadline, f"the LLM server at {url} did not start"
            await asyncio.sleep(0.25)
