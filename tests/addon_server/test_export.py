"""``vigil-addon export``: real ultralytics export, real onnxruntime, Triton's own protobuf.

The model is a randomly initialised yolo11n (hub downloads are unavailable): its outputs are
arbitrary but deterministic, so the .pt and the ONNX are compared as raw tensors.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from addon_server.config import load
from addon_server.export import (
    NO_TENSORRT,
    ExportError,
    _tensorrt,
    engine_path,
    onnx_io,
    run_export,
)
from tests.addon_server.conftest import ASSETS, addon_process_env

IMGSZ = 160


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``python -m addon_server`` with this checkout's code first."""
    return subprocess.run(
        [sys.executable, "-m", "addon_server", *args],
        cwd=cwd,
        env=addon_process_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="session")
def tiny_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("pt") / "tinyyolo.pt"
    torch.manual_seed(0)
    YOLO("yolo11n.yaml").save(str(path))
    return path


@pytest.fixture(scope="session")
def cli_triton(tiny_pt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real CLI run (``--format triton``) with a config naming a GPU and the CPU."""
    work = tmp_path_factory.mktemp("cli")
    config = work / "config.yaml"
    config.write_text(
        "batching:\n  max_batch_size: 8\n  max_queue_delay_us: 2500\n"
        "  preferred_batch_sizes: [2, 4]\n"
        "devices:\n  cuda:1:\n    services: [detector]\n  cpu:\n    services: [llm]\n"
    )
    out = work / "out"
    proc = _cli(
        work,
        *("--config", str(config), "export", "--model", str(tiny_pt), "--out", str(out)),
        *("--format", "triton", "--imgsz", str(IMGSZ)),
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def _photo(size: int) -> np.ndarray:
    """bus.jpg as the model's input: RGB, CHW, 0..1, square resize."""
    from PIL import Image

    with Image.open(ASSETS / "bus.jpg") as img:
        rgb = img.convert("RGB").resize((size, size))
    return (np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0)[None]


def test_onnx_matches_pt_at_batch_1_and_4(tiny_pt: Path, cli_triton: tuple[Path, str]) -> None:
    from ultralytics import YOLO

    out, _ = cli_triton
    onnx_path = out / "tinyyolo.onnx"
    model = YOLO(str(tiny_pt)).model
    assert model is not None
    model.eval()
    image = _photo(IMGSZ)
    with torch.no_grad():
        reference = model(torch.from_numpy(image))
    expected = (reference[0] if isinstance(reference, (list, tuple)) else reference).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (single,) = session.run(None, {name: image})[:1]
    np.testing.assert_allclose(single, expected, rtol=1e-3, atol=1e-3)
    batch = np.concatenate([image, image[:, ::-1].copy(), image, image * 0.5])
    (four,) = session.run(None, {name: batch})[:1]
    assert four.shape[0] == 4
    np.testing.assert_allclose(four[0], expected[0], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(four[2], expected[0], rtol=1e-3, atol=1e-3)


def test_triton_config_parses_as_model_config(cli_triton: tuple[Path, str]) -> None:
    out, stdout = cli_triton
    model_dir = out / "triton" / "tinyyolo"
    assert "Triton model repository" in stdout
    assert (model_dir / "1" / "model.onnx").is_file()
    config = text_format.Parse(
        (model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert config.name == "tinyyolo"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2500
    inputs, outputs = onnx_io(model_dir / "1" / "model.onnx")
    assert [(i.name, list(i.dims)) for i in config.input] == [
        (s.name, list(s.dims)) for s in inputs
    ]
    # ultralytics' dynamic=True frees height and width too; channels stay fixed.
    assert list(config.input[0].dims) == [3, -1, -1]
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32
    assert [o.name for o in config.output] == [s.name for s in outputs]
    kinds = [(g.kind, list(g.gpus)) for g in config.instance_group]
    assert kinds == [
        (model_config_pb2.ModelInstanceGroup.KIND_GPU, [1]),
        (model_config_pb2.ModelInstanceGroup.KIND_CPU, []),
    ]


def test_engine_without_tensorrt_still_writes_onnx(tiny_pt: Path, tmp_path: Path) -> None:
    if _tensorrt() is not None:
        pytest.skip("tensorrt is installed here")
    settings = load(None)
    # An .onnx already beside the user's weights is not theirs to lose.
    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(tiny_pt, src / tiny_pt.name)
    (src / "tinyyolo.onnx").write_bytes(b"the user's own")
    result = run_export(
        src / tiny_pt.name,
        tmp_path / "out",
        "engine",
        imgsz=IMGSZ,
        batching=settings.batching,
        devices=settings.devices,
        fp16=True,
    )
    assert result.engine is None
    assert result.message == NO_TENSORRT
    assert result.onnx == tmp_path / "out" / "tinyyolo.onnx"
    assert result.onnx.stat().st_size > 1000
    assert (src / "tinyyolo.onnx").read_bytes() == b"the user's own"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tinyyolo.onnx"]


def test_engine_cache_key_changes_with_gpu_and_tensorrt(tmp_path: Path) -> None:
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"graph")
    base = engine_path(tmp_path, onnx_file, "NVIDIA H100 80GB HBM3", "10.7.0", "fp16")
    assert base == engine_path(tmp_path, onnx_file, "NVIDIA H100 80GB HBM3", "10.7.0", "fp16")
    others = {
        engine_path(tmp_path, onnx_file, "NVIDIA H200", "10.7.0", "fp16"),
        engine_path(tmp_path, onnx_file, "NVIDIA H100 80GB HBM3", "10.8.0", "fp16"),
        engine_path(tmp_path, onnx_file, "NVIDIA H100 80GB HBM3", "10.7.0", "int8"),
    }
    assert base not in others and len(others) == 3
    onnx_file.write_bytes(b"another graph")
    assert base != engine_path(tmp_path, onnx_file, "NVIDIA H100 80GB HBM3", "10.7.0", "fp16")


@pytest.mark.parametrize(
    ("fmt", "calib", "problem"),
    [("onnx", None, "no such file"), ("engine", "nope", "int8-calib nope: not a directory")],
)
def test_bad_inputs_name_the_problem(
    tmp_path: Path, fmt: str, calib: str | None, problem: str
) -> None:
    settings = load(None)
    with pytest.raises(ExportError, match=problem):
        run_export(
            tmp_path / "missing.pt",
            tmp_path,
            fmt,
            imgsz=IMGSZ,
            batching=settings.batching,
            devices=settings.devices,
            int8_calib=None if calib is None else Path(calib),
        )


def test_cli_engine_without_tensorrt_says_so_and_exits_0(tiny_pt: Path, tmp_path: Path) -> None:
    if _tensorrt() is not None:
        pytest.skip("tensorrt is installed here")
    proc = _cli(
        tmp_path,
        *("export", "--model", str(tiny_pt), "--out", str(tmp_path / "out")),
        *("--format", "engine", "--fp16", "--imgsz", str(IMGSZ)),
    )
    assert proc.returncode == 0, proc.stderr
    assert f"vigil-addon: {NO_TENSORRT}" in proc.stdout.splitlines()
    assert (tmp_path / "out" / "tinyyolo.onnx").is_file()


def test_cli_missing_model_exits_2_naming_it(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "export", "--model", "nope.pt", "--out", "o")
    assert proc.returncode == 2
    assert "--model nope.pt: no such file" in proc.stderr
