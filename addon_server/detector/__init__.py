"""Object detection: the :class:`Detector` protocol, its backends and the dynamic batcher."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

from addon_server.config import DetectorSettings
from addon_server.detector.base import Detection, DetectionResult, Detector, Selection, select
from addon_server.detector.darknet import (
    EMBEDDED_MODEL_NAME,
    DarknetDetector,
    DarknetFiles,
    embedded_files,
)
from addon_server.errors import ModelNotInstalledError

__all__ = [
    "EMBEDDED_MODEL_NAME",
    "Detection",
    "DetectionResult",
    "Detector",
    "ModelNotInstalledError",
    "Selection",
    "load_detector",
    "select",
]


def resolve_backend(settings: DetectorSettings) -> str:
    """``auto`` means Triton when it is enabled, else the embedded darknet model, or what the
    model file's type implies."""
    if settings.backend == "auto" and settings.triton.enabled:
        return "triton"
    if settings.backend != "auto":
        return settings.backend
    if settings.model_path is None:
        return "darknet"
    return "darknet" if settings.model_path.endswith(".weights") else "ultralytics"


def load_detector(settings: DetectorSettings, device: str) -> Detector:
    """Load the configured detector on ``device`` (blocking: call it off the event loop)."""
    backend = resolve_backend(settings)
    if backend == "ray":
        from addon_server.ray_serve.client import RayDetector

        fallback = None
        if settings.ray.detector_fallback == "local":
            # The single-process add-on's default: the embedded yolov3-tiny, on the CPU.
            embedded = replace(
                settings, backend="darknet", model_path=None, cfg_path=None, names_path=None
            )
            fallback = functools.partial(load_detector, embedded, "cpu")
        return RayDetector(settings.ray, fallback=fallback)
    if backend == "triton":
        from addon_server.detector.triton import TritonDetector

        return TritonDetector(
            settings.triton, device=device, min_confidence=settings.min_confidence
        )
    if backend == "darknet":
        if settings.model_path is None:
            files, name = embedded_files(), EMBEDDED_MODEL_NAME
        else:
            weights = Path(settings.model_path)
            cfg = Path(settings.cfg_path or weights.with_suffix(".cfg"))
            names = Path(settings.names_path or weights.with_name("coco.names"))
            files, name = DarknetFiles(cfg, weights, names), weights.stem
            for path in (cfg, weights, names):
                if not path.is_file():
                    raise ModelNotInstalledError(f"detector file not found: {path}")
        return DarknetDetector(
            files,
            name=name,
            device=device,
            input_size=settings.input_size,
            min_confidence=settings.min_confidence,
            nms_iou=settings.nms_iou,
        )
    if settings.model_path is None:
        raise ModelNotInstalledError("detector.model_path is required with backend 'ultralytics'")
    if not Path(settings.model_path).exists():
        raise ModelNotInstalledError(f"detector model not found: {settings.model_path}")
    from addon_server.detector.ultralytics import UltralyticsDetector

    return UltralyticsDetector(
        settings.model_path,
        device=device,
        input_size=settings.input_size,
        min_confidence=settings.min_confidence,
        nms_iou=settings.nms_iou,
        gpu_path=settings.gpu_path,
    )
