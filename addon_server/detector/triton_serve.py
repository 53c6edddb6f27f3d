"""Serve Vigil's detector on a Triton server with PyTriton: the other end of the ``triton`` backend.

``python -m addon_server.detector.triton_serve --grpc-port 8001 --http-port 8000`` loads the
configured detector (by default the embedded yolov3-tiny) and binds it as a Python model with
Triton's dynamic batching, speaking the protocol :mod:`addon_server.detector.triton` defines.
``--null`` adds a model that returns its input, for measuring the serving path alone.

PyTriton (``nvidia-pytriton``, a test and benchmark dependency) embeds Triton 2.51 with only
the Python backend. Two facts of that build shape this module:

* Triton's Python-backend stub links ``libpython3.11``: ``LD_LIBRARY_PATH`` must name this
  interpreter's library folder, which the server inherits from this process.
* The stub's pybind11 predates NumPy 2 (it reads NumPy 1's array-descriptor layout and sends
  empty tensors under NumPy 2). The stub therefore runs on a small environment of its own
  (``<venv>/pytriton-stub``: NumPy 1.26 and pyzmq, made by the Makefile) while the model
  function runs here, on the add-on's NumPy 2; they exchange raw bytes.

SIGTERM stops the server cleanly (Triton and the stub exit with this process).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from addon_server.config import TritonSettings, load
from addon_server.detector import load_detector
from addon_server.detector.base import Detector
from addon_server.detector.triton import (
    CLASS_NAMES_PARAMETER,
    INPUT_NAME,
    OUTPUT_COLUMNS,
    OUTPUT_NAME,
)

_LOGGER = logging.getLogger(__name__)
NULL_MODEL = "null"
NULL_TENSOR = "data"
STUB_ENV_VARIABLE = "VIGIL_PYTRITON_STUB_ENV"


def stub_env() -> Path:
    """The Python environment Triton's stub runs on (see the module docstring)."""
    return Path(os.environ.get(STUB_ENV_VARIABLE) or Path(sys.prefix) / "pytriton-stub")


def detections_array(detector: Detector, images: list[np.ndarray]) -> np.ndarray:
    """Run ``detector`` and pack its detections as the protocol's padded ``[N, K, 6]`` rows."""
    results = detector.detect_batch(images)
    class_ids = {name: index for index, name in enumerate(detector.class_names)}
    rows = max(1, max((len(r) for r in results), default=0))
    out = np.full((len(results), rows, OUTPUT_COLUMNS), -1.0, dtype=np.float32)
    for i, detections in enumerate(results):
        for j, d in enumerate(detections):
            out[i, j] = (
                d.x,
                d.y,
                d.x + d.width,
                d.y + d.height,
                d.confidence,
                class_ids[d.class_name],
            )
    return out


def publish_parameters(model_name: str, parameters: dict[str, str]) -> None:
    """Add ``parameters`` to the Triton configuration PyTriton writes for ``model_name``.

    A model repository says ``parameters: { key: "class_names" ... }`` in its config.pbtxt;
    PyTriton's public ModelConfig has no such field, so its config builder is wrapped.
    """
    from pytriton.models.model import Model

    build = Model._get_triton_model_config

    def with_parameters(self: Any) -> Any:
        config = build(self)
        if self.model_name == model_name:
            config.backend_parameters.update(parameters)
        return config

    Model._get_triton_model_config = with_parameters


def _trace_config(url: str | None) -> list[str] | None:
    """Triton's OpenTelemetry tracing of every request, continuing a ``traceparent`` it is sent."""
    if url is None:
        return None
    return ["mode=opentelemetry", "rate=1", "level=TIMESTAMPS", f"opentelemetry,url={url}"]


def serve(args: argparse.Namespace) -> None:
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.server import triton_server
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    libdir = str(sysconfig.get_config_var("LIBDIR"))
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p
    )
    env = stub_env()
    if (env / "bin" / "python").exists():
        triton_server.get_triton_python_backend_python_env = lambda: env
    else:
        _LOGGER.warning("no stub environment at %s: outputs may arrive empty under NumPy 2", env)

    settings = load(args.config, environ={}).detector
    detector = load_detector(replace(settings, triton=TritonSettings()), args.device)

    @batch  # type: ignore[untyped-decorator]
    def infer_detector(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {OUTPUT_NAME: detections_array(detector, list(inputs[INPUT_NAME]))}

    @batch  # type: ignore[untyped-decorator]
    def infer_null(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {NULL_TENSOR: inputs[NULL_TENSOR].copy()}

    batcher = DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us)
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        exit_timeout_secs=2,
        log_verbose=0,
        trace_config=_trace_config(args.trace_url),
    )
    # No restricted endpoints: the backend reads the statistics endpoint for /health.
    security = TritonSecurityConfig(restricted_endpoints=[])

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # PyTriton's serve() stops Triton on it

    signal.signal(signal.SIGTERM, stop)
    publish_parameters(args.model, {CLASS_NAMES_PARAMETER: json.dumps(detector.class_names)})
    with Triton(config=config, workspace=args.workspace, security_config=security) as triton:
        triton.bind(
            model_name=args.model,
            infer_func=infer_detector,
            inputs=[Tensor(name=INPUT_NAME, dtype=np.uint8, shape=(-1, -1, 3))],
            outputs=[Tensor(name=OUTPUT_NAME, dtype=np.float32, shape=(-1, OUTPUT_COLUMNS))],
            config=ModelConfig(max_batch_size=args.max_batch_size, batcher=batcher),
            strict=True,
        )
        if args.null:
            triton.bind(
                model_name=NULL_MODEL,
                infer_func=infer_null,
                inputs=[Tensor(name=NULL_TENSOR, dtype=np.float32, shape=(-1,))],
                outputs=[Tensor(name=NULL_TENSOR, dtype=np.float32, shape=(-1,))],
                config=ModelConfig(max_batch_size=args.max_batch_size, batcher=batcher),
            )
        print(f"serving {args.model} on grpc {args.grpc_port}, http {args.http_port}", flush=True)
        triton.serve()
    detector.close()


class ServerProcess:
    """This module in a child process: how the tests and the benchmark run a real Triton.

    Each start uses a fresh workspace (PyTriton allows one process per port and workspace);
    the ports stay, so a client configured once finds the server again after a restart.
    """

    def __init__(
        self,
        workspace: Path,
        *,
        grpc_port: int,
        http_port: int,
        metrics_port: int,
        model: str = TritonSettings().model,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.workspace = workspace
        self.grpc_port, self.http_port, self.metrics_port = grpc_port, http_port, metrics_port
        self.extra = tuple(extra)
        self.env = dict(env if env is not None else os.environ)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workspace / f"triton-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        self.workspace.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            __spec__.name if __spec__ is not None else "addon_server.detector.triton_serve",
            "--grpc-port",
            str(self.grpc_port),
            "--http-port",
            str(self.http_port),
            "--metrics-port",
            str(self.metrics_port),
            "--workspace",
            str(self.workspace / f"run-{self.starts}"),
            "--model",
            self.model,
            *self.extra,
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )

    def ready(self) -> bool:
        """Whether every model this process serves answers ready on HTTP.

        Not the server's ``/v2/health/ready``: PyTriton starts Triton before it binds models.
        """
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"Triton exited; see {self.log_path}: {self.log_tail()}")
        models = [self.model, *([NULL_MODEL] if "--null" in self.extra else [])]
        for model in models:
            url = f"http://127.0.0.1:{self.http_port}/v2/models/{model}/ready"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status != 200:
                        return False
            except OSError:
                return False
        return True

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Triton not ready within {timeout_s:.0f} s: {self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM, then wait: PyTriton stops Triton and its stub before it exits."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="vigil.yaml (detector section)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=TritonSettings().model, help="served model name")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--workspace", type=Path, default=None, help="PyTriton's workspace")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument("--null", action="store_true", help="also serve a null model")
    parser.add_argument(
        "--trace-url", default=None, help="OTLP/HTTP traces URL: Triton exports its spans there"
    )
    logging.basicConfig(level=logging.INFO)
    serve(parser.parse_args(argv))


if __name__ == "__main__":
    main()
