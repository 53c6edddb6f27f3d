"""``vigil-addon export``: ultralytics ``.pt`` to ONNX, a TensorRT engine and a Triton repository.

ONNX is always produced (dynamic batch axis, so one file serves every batch size the batcher
forms). A TensorRT engine is built only where ``tensorrt`` imports; engines are specific to the
GPU and the TensorRT version that built them, so the cache key holds both and a change of
either rebuilds. The Triton repository's batching and instance groups come from the add-on's
own settings (``batching``, ``devices``), so Triton batches the way the in-process batcher does.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from addon_server.config import BatchingSettings, DevicesSettings

FORMATS = ("onnx", "engine", "triton")
NO_TENSORRT = "tensorrt is not installed: no TensorRT engine built (the ONNX model is ready)"

# ONNX element types (onnx.TensorProto) to Triton's DataType names.
_TRITON_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 6: "TYPE_INT32", 7: "TYPE_INT64", 2: "TYPE_UINT8"}


class ExportError(Exception):
    """An export that cannot proceed; the message names the input at fault."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One ONNX graph input/output: name, Triton type and the dims after the batch axis."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ExportResult:
    onnx: Path
    engine: Path | None
    triton_repo: Path | None
    message: str | None


def export_onnx(model: Path, out_dir: Path, imgsz: int) -> Path:
    """Run ultralytics' own exporter with a dynamic batch axis; return the ``.onnx`` in *out_dir*.

    ``simplify=False``: onnxslim is not a dependency, and with YOLO_AUTOINSTALL off ultralytics
    would otherwise try (and fail) to install it.
    """
    if not model.is_file():
        raise ExportError(f"--model {model}: no such file")
    from ultralytics import YOLO

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{model.stem}.onnx"
    # ultralytics writes next to the weights: export a copy in a scratch folder, so a read-only
    # model folder works and an .onnx already beside the user's .pt is left alone.
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        copy = Path(scratch) / model.name
        shutil.copyfile(model, copy)
        produced = YOLO(str(copy)).export(format="onnx", dynamic=True, imgsz=imgsz, simplify=False)
        shutil.move(str(produced), target)
    return target


def onnx_io(onnx_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs, batch axis dropped (Triton adds it from max_batch_size)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def specs(values: Any) -> list[TensorSpec]:
        result = []
        for value in values:
            tensor = value.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
            data_type = _TRITON_TYPES.get(tensor.elem_type)
            if data_type is None:
                raise ExportError(f"{value.name}: ONNX element type {tensor.elem_type} unsupported")
            result.append(TensorSpec(value.name, data_type, dims[1:]))
        return result

    initializers = {init.name for init in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    return specs(inputs), specs(graph.output)


def _instance_groups(devices: DevicesSettings) -> list[str]:
    """One group per configured device: ``cuda:N`` → KIND_GPU ``gpus: [N]``, ``cpu`` → KIND_CPU."""
    groups = []
    for entry in devices.devices:
        match = re.fullmatch(r"cuda:(\d+)", entry.device_id)
        if match:
            groups.append(f"  {{ count: 1 kind: KIND_GPU gpus: [ {match.group(1)} ] }}")
        elif entry.device_id == "cpu":
            groups.append("  { count: 1 kind: KIND_CPU }")
    return groups or ["  { count: 1 kind: KIND_CPU }"]


def triton_config(
    name: str, onnx_path: Path, batching: BatchingSettings, devices: DevicesSettings
) -> str:
    """``config.pbtxt`` text (protobuf text format of Triton's ``ModelConfig``)."""
    inputs, outputs = onnx_io(onnx_path)

    def tensors(kind: str, specs: Sequence[TensorSpec]) -> str:
        body = ",\n".join(
            f'  {{ name: "{s.name}" data_type: {s.data_type} dims: [ '
            f"{', '.join(str(d) for d in s.dims)} ] }}"
            for s in specs
        )
        return f"{kind} [\n{body}\n]"

    preferred = [s for s in batching.preferred_batch_sizes if s <= batching.max_batch_size]
    preferred_text = ", ".join(str(s) for s in preferred)
    return "\n".join(
        [
            f'name: "{name}"',
            'platform: "onnxruntime_onnx"',
            f"max_batch_size: {batching.max_batch_size}",
            tensors("input", inputs),
            tensors("output", outputs),
            "dynamic_batching {",
            f"  preferred_batch_size: [ {preferred_text} ]" if preferred else "",
            f"  max_queue_delay_microseconds: {batching.max_queue_delay_us}",
            "}",
            "instance_group [",
            ",\n".join(_instance_groups(devices)),
            "]",
            "",
        ]
    )


def write_triton_repo(
    repo: Path, name: str, onnx_path: Path, batching: BatchingSettings, devices: DevicesSettings
) -> Path:
    """``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/model.onnx``; return the model dir."""
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").write_text(triton_config(name, onnx_path, batching, devices))
    return model_dir


def engine_cache_key(onnx_path: Path, gpu_name: str, trt_version: str, precision: str) -> str:
    """Engines only run on the GPU model and TensorRT version that built them: key on both,
    plus the ONNX content and precision, so any change selects (and builds) a new engine."""
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()[:16]
    safe_gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-")
    return f"{digest}-{precision}-{safe_gpu}-trt{trt_version}"


def engine_path(
    out_dir: Path, onnx_path: Path, gpu_name: str, trt_version: str, precision: str
) -> Path:
    key = engine_cache_key(onnx_path, gpu_name, trt_version, precision)
    return out_dir / f"{onnx_path.stem}-{key}.engine"


def _tensorrt() -> Any | None:
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        return None


def build_engine(
    onnx_path: Path,
    out_dir: Path,
    *,
    fp16: bool,
    int8_calib: Path | None,
    imgsz: int,
    max_batch: int,
) -> tuple[Path | None, str | None]:
    """Build (or reuse) a TensorRT engine; ``(None, message)`` when tensorrt is missing.

    Not runnable on a machine without tensorrt and a GPU: written to the TensorRT 10 API.
    """
    trt = _tensorrt()
    if trt is None:
        return None, NO_TENSORRT
    import torch

    if not torch.cuda.is_available():
        return None, "no CUDA GPU: no TensorRT engine built (the ONNX model is ready)"
    precision = "int8" if int8_calib else "fp16" if fp16 else "fp32"
    target = engine_path(
        out_dir, onnx_path, torch.cuda.get_device_name(0), str(trt.__version__), precision
    )
    if target.is_file():
        return target, f"cached engine {target.name}"
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        raise ExportError(f"{onnx_path}: TensorRT could not parse it: {parser.get_error(0)}")
    config = builder.create_builder_config()
    if fp16 or int8_calib:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8_calib:
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _calibrator(trt, int8_calib, imgsz, out_dir / "int8.cache")
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    shape = (3, imgsz, imgsz)
    profile.set_shape(name, (1, *shape), (max(1, max_batch // 2), *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    if int8_calib:
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT engine build failed (see the log above)")
    out_dir.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bytes(serialized))
    return target, None


def calibration_images(folder: Path) -> list[Path]:
    images = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"}
    )
    if not images:
        raise ExportError(f"--int8-calib {folder}: no .jpg/.png images in it")
    return images


def _calibrator(trt: Any, folder: Path, imgsz: int, cache: Path) -> Any:
    """An entropy calibrator over the folder's images, letterbox-free square resize."""
    import numpy as np
    import torch
    from PIL import Image

    images = calibration_images(folder)

    class _Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.index = 0
            self.buffer: torch.Tensor | None = None

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= len(images):
                return None
            with Image.open(images[self.index]) as img:
                rgb = img.convert("RGB").resize((imgsz, imgsz))
            self.index += 1
            arr = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
            self.buffer = torch.from_numpy(np.ascontiguousarray(arr)).cuda()
            return [int(self.buffer.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: bytes) -> None:
            cache.write_bytes(bytes(data))

    return _Calibrator()


def run_export(
    model: Path,
    out: Path,
    fmt: str,
    *,
    imgsz: int,
    batching: BatchingSettings,
    devices: DevicesSettings,
    fp16: bool = False,
    int8_calib: Path | None = None,
) -> ExportResult:
    """The CLI's work: ONNX always, then the engine or the Triton repository as asked."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if int8_calib is not None and not int8_calib.is_dir():
        raise ExportError(f"--int8-calib {int8_calib}: not a directory")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    onnx_path = export_onnx(model, out, imgsz)
    if fmt == "engine":
        engine, message = build_engine(
            onnx_path,
            out,
            fp16=fp16,
            int8_calib=int8_calib,
            imgsz=imgsz,
            max_batch=batching.max_batch_size,
        )
        return ExportResult(onnx_path, engine, None, message)
    if fmt == "triton":
        repo = out / "triton"
        write_triton_repo(repo, model.stem, onnx_path, batching, devices)
        return ExportResult(onnx_path, None, repo, None)
    return ExportResult(onnx_path, None, None, None)
