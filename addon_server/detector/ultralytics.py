"""Whatever Ultralytics' ``YOLO()`` loads: ``.pt``, ``.onnx``, ``.engine``, an OpenVINO folder.

Ultralytics letterboxes, batches and runs NMS itself; this wrapper maps its results onto
:class:`Detection`. Exported formats with a fixed batch dimension (a default ONNX export is
batch 1) are found out on the first multi-image batch and from then on run image by image; the
batcher still feeds them from one queue.

An Ultralytics model is not thread-safe (its predictor keeps per-call state; Ultralytics' own
guidance is one model per thread): predictions run one at a time under a lock, whatever thread
calls — the batcher's single worker, start-up warm-up and autotune, or a test.

GPU path optimisations (:class:`~addon_server.config.GpuPathSettings`, each off by default):
FP16 and ``torch.compile`` are Ultralytics' own ``half`` and ``compile`` arguments; pinned host
memory and CUDA streams need the batch in hand between the stages, so they run the *staged*
path: Ultralytics' own letterbox, forward pass and post-processing, called stage by stage
(:meth:`UltralyticsDetector._predict_staged`). Where an optimisation cannot apply (an exported
model, whose precision and I/O are fixed at export; a CPU for all but ``compile``) the detector
runs the plain path and says once why (:func:`active_paths`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from addon_server.config import GpuPathSettings
from addon_server.detector.base import Detection, clip_box
from addon_server.imaging import BGRImage

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ActivePaths:
    """The optimisations that apply to one detector, and why the others do not."""

    half: bool = False
    pinned_memory: bool = False
    cuda_streams: int = 0
    """Streams in the pool; 0: no streams."""
    compile: str = "off"
    fallbacks: tuple[str, ...] = ()

    @property
    def staged(self) -> bool:
        """Whether batches run stage by stage (pinned memory or streams need it)."""
        return self.pinned_memory or self.cuda_streams > 0


def active_paths(requested: GpuPathSettings, device: str, exported: bool) -> ActivePaths:
    """What of ``requested`` runs on ``device`` for a ``.pt`` (or an ``exported``) model."""
    cuda = device.startswith("cuda")
    fallbacks: list[str] = []

    def applies(name: str, asked: bool, needs_cuda: bool = True) -> bool:
        if not asked:
            return False
        if exported:
            fallbacks.append(f"{name} applies to .pt models (an exported model is fixed at export)")
            return False
        if needs_cuda and not cuda:
            fallbacks.append(f"{name} needs a CUDA device; on {device} the plain path runs")
            return False
        return True

    streams = applies("cuda_streams", requested.cuda_streams)
    return ActivePaths(
        half=applies("half", requested.half),
        pinned_memory=applies("pinned_memory", requested.pinned_memory),
        cuda_streams=requested.cuda_streams_pool_size if streams else 0,
        compile=requested.compile
        if applies("compile", requested.compile != "off", needs_cuda=False)
        else "off",
        fallbacks=tuple(fallbacks),
    )


def split(items: Sequence[_T], parts: int) -> list[list[_T]]:
    """``items`` in at most ``parts`` contiguous runs of near-equal length, in order."""
    count = min(max(parts, 1), len(items))
    size, extra = divmod(len(items), count)
    runs, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        runs.append(list(items[start:end]))
        start = end
    return runs


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
        gpu_path: GpuPathSettings | None = None,
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
        self.paths = active_paths(gpu_path or GpuPathSettings(), device, self._exported)
        for reason in self.paths.fallbacks:
            _LOGGER.info("%s: %s", self.name, reason)
        self._streams: list[Any] = []

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
        if self.paths.staged:
            return self._predict_staged(
                images, streams=self.paths.cuda_streams, pinned=self.paths.pinned_memory
            )
        with self._lock:
            results = self._model.predict(images, **self._predict_args())
        return [self._detections(image, r) for image, r in zip(images, results, strict=True)]

    def _predict_args(self) -> dict[str, Any]:
        return {
            "imgsz": self.input_size,
            "conf": self.min_confidence,
            "iou": self.nms_iou,
            "device": self._device_arg,
            "quantize": 16 if self.paths.half else None,
            "compile": False if self.paths.compile == "off" else self.paths.compile,
            "verbose": False,
        }

    def _predict_staged(
        self, images: list[BGRImage], *, streams: int, pinned: bool
    ) -> list[list[Detection]]:
        """The plain path's stages, called one by one so that the batch can be moved through
        page-locked memory and split over CUDA streams.

        The batch is split into ``streams`` parts (one without streams). Each part is
        stacked, copied and run on its own stream; the forward passes are queued without
        waiting, so the CPU prepares the next part while the GPU runs this one, and
        post-processes a part while the GPU runs the later ones. Images of one size (one
        camera's) are letterboxed part by part, overlapping the GPU too; a batch of mixed sizes
        is letterboxed as a whole first, because Ultralytics pads it differently from a part
        whose images happen to share a size. On a CPU the same stages run one after another,
        on no stream: the results are the plain path's.
        """
        import torch

        with self._lock:
            predictor = self._model.predictor
            if predictor is None:  # Ultralytics sets its predictor up on the first call
                self._model.predict(images[:1], **self._predict_args())
                predictor = self._model.predictor
            cuda = streams > 0 and self.device.startswith("cuda")
            pool = self._stream_pool(streams) if cuda else []
            boxed = None if len({i.shape for i in images}) == 1 else predictor.pre_transform(images)
            queued = []
            with torch.inference_mode():
                for index, run in enumerate(split(range(len(images)), max(streams, 1))):
                    stream = pool[index] if pool else None
                    part = [images[i] for i in run]
                    with _on_stream(stream):
                        letterboxed = (
                            predictor.pre_transform(part)
                            if boxed is None
                            else [boxed[i] for i in run]
                        )
                        batch = self._to_device(predictor, letterboxed, pinned)
                        queued.append((stream, part, batch, predictor.inference(batch)))
                out: list[list[Detection]] = []
                for stream, part, batch, preds in queued:
                    with _on_stream(stream):  # the copies to the host wait for this stream only
                        # construct_results pairs images with the paths of predictor.batch
                        predictor.batch = ([""] * len(part), part, [""] * len(part))
                        results = predictor.postprocess(preds, batch, part)
                        out.extend(
                            self._detections(i, r) for i, r in zip(part, results, strict=True)
                        )
        return out

    @staticmethod
    def _to_device(predictor: Any, boxed: list[BGRImage], pinned: bool) -> Any:
        """The rest of Ultralytics' pre-processing (BGR→RGB, 0-1 scaling, its precision), with
        the letterboxed uint8 batch stacked straight into page-locked memory and copied
        without blocking when ``pinned``."""
        import torch

        pinned = pinned and predictor.device.type == "cuda"  # page-locking needs CUDA
        host = torch.empty((len(boxed), *boxed[0].shape), dtype=torch.uint8, pin_memory=pinned)
        np.stack(boxed, out=host.numpy())
        batch = host.to(predictor.device, non_blocking=pinned)
        batch = batch.permute(0, 3, 1, 2).contiguous().flip(1)
        return (batch.half() if predictor.model.fp16 else batch.float()).div_(255)

    def _stream_pool(self, size: int) -> list[Any]:
        import torch

        if len(self._streams) != size:
            self._streams = [torch.cuda.Stream(device=self._device_arg) for _ in range(size)]
        return self._streams

    def _detections(self, image: BGRImage, result: Any) -> list[Detection]:
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
        return detections


@contextlib.contextmanager
def _on_stream(stream: Any) -> Iterator[None]:
    """Queue the work inside on ``stream`` (None: the current one), after everything already
    queued on the current stream (the weights' upload, an earlier batch's use of them)."""
    if stream is None:
        yield
        return
    import torch

    stream.wait_stream(torch.cuda.current_stream(stream.device))
    with torch.cuda.stream(stream):
        yield
