"""Whatever Ultralytics' ``YOLO()`` loads: ``.pt``, ``.onnx``, ``.engine``, an OpenVINO folder.

Ultralytics letterboxes, batches and runs NMS itself; this wrapper maps its results onto
:class:`Detection`. Exported formats with a fixed batch dimension (a default ONNX export is
batch 1) are found out on the first multi-image batch and from then on run image by image; the
batcher still feeds them from one queue.

An Ultralytics model is not thread-safe (its predictor keeps per-call state; Ultralytics' own
guidance is one model per thread): predictions run one at a time under a lock, whatever thread
calls — the batcher's single worker, start-up warm-up and autotune, or a test.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from addon_server.detector.base import Detection, clip_box
from addon_server.imaging import BGRImage

_LOGGER = logging.getLogger(__name__)


class UltralyticsDetector:
    """An Ultralytics YOLO detection model on one device."""

    backend = "ultralytics"

    def __init__(
        self,
        model_path: str,
        *,
        name: str | None = None,
        device: str,
        input_size: int = 640,
        min_confidence: float = 0.1,
        nms_iou: float = 0.45,
    ) -> None:
        from ultralytics import YOLO  # heavy import: only when this backend is chosen

        self.name = name or Path(model_path).stem
        self.device = device
        self.input_size = input_size
        self.min_confidence = min_confidence
        self.nms_iou = nms_iou
        self._path = Path(model_path)
        self._model: Any = YOLO(model_path, task="detect")
        names = self._model.names
        self.class_names: tuple[str, ...] = tuple(names[i] for i in sorted(names))
        self._exported = self._path.suffix.lower() != ".pt"
        self._fixed_batch = False
        self._device_arg: str | int = "cpu" if device == "cpu" else int(device.split(":")[1])
        self._lock = threading.Lock()

    def memory_bytes(self) -> int:
        if self._path.is_file():
            return self._path.stat().st_size
        return sum(p.stat().st_size for p in self._path.rglob("*") if p.is_file())

    def close(self) -> None:
        with self._lock:
            self._model = None

    def detect_batch(self, images: Sequence[BGRImage]) -> list[list[Detection]]:
        if not images:
            return []
        if len(images) > 1 and self._fixed_batch:
            return [self._predict([image])[0] for image in images]
        try:
            return self._predict(list(images))
        except Exception:
            if len(images) == 1 or not self._exported:
                raise
            _LOGGER.warning("%s has a fixed batch size; running images one by one", self.name)
            self._fixed_batch = True
            return [self._predict([image])[0] for image in images]

    def _predict(self, images: list[BGRImage]) -> list[list[Detection]]:
        with self._lock:
            results = self._model.predict(
                images,
                imgsz=self.input_size,
                conf=self.min_confidence,
                iou=self.nms_iou,
                device=self._device_arg,
                verbose=False,
            )
        out: list[list[Detection]] = []
        for image, result in zip(images, results, strict=True):
            height, width = image.shape[:2]
            boxes = result.boxes
            detections = []
            xyxy = boxes.xyxy.cpu().numpy()
            confs = boxes.conf.cpu().numpy()
            classes = boxes.cls.cpu().numpy().astype(int)
            for (x1, y1, x2, y2), conf, cls in zip(xyxy, confs, classes, strict=True):
                x, y, w, h = clip_box(x1, y1, x2, y2, width, height)
                if w and h:
                    detections.append(Detection(self.class_names[cls], float(conf), x, y, w, h))
            out.append(detections)
        return out
