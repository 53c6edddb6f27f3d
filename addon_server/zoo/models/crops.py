"""What the crop families share: an ONNX network run on a batch of detector crops.

Pet, vehicle, threat and appearance models all cut boxes out of the frame, fit each into the
network's input (letterboxed on grey, so a tall person or a gun at the edge of a crop is not cut
off), normalise, and run them in batches. onnxruntime's ``run`` is thread-safe, so no lock is held.

Batch size is memory: onnxruntime's CPU arena keeps the buffers of the largest batch it ever
ran. EfficientNet-Lite0 measured +76 MiB resident at batch 1, +171 MiB at 4 and +396 MiB at 12
(the threat model's 4 people × 3 crops), with no clear speed gain on a 2-core CPU; so crops go
one at a time on a CPU and :data:`CUDA_BATCH` at a time on a GPU (the ``crop_batch`` option
overrides both), and ``warmup`` runs a busy frame's largest batch so the zoo measures what a
busy frame takes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from addon_server.errors import ModelNotInstalledError
from addon_server.imaging import BGRImage
from addon_server.zoo.interface import LoadContext
from addon_server.zoo.models.boxes import Box, letterbox
from addon_server.zoo.models.onnx import session

Floats = npt.NDArray[np.float32]
CUDA_BATCH = 8
Normalise = Callable[[Floats], Floats]
"""RGB float pixels 0–255, NHWC → the network's input values (still NHWC)."""


def region(pixels: BGRImage, box: Box) -> BGRImage:
    return pixels[box.y : box.y + box.height, box.x : box.x + box.width]


class OnnxCropNet:
    """One ONNX network over crops: ``(N, 3, height, width)`` in, its first output back."""

    def __init__(
        self,
        context: LoadContext,
        file: str,
        *,
        width: int,
        height: int,
        normalise: Normalise,
        what: str,
    ) -> None:
        path: Path = context.path(file)
        if not path.is_file():
            raise ModelNotInstalledError(f"{what} not installed: {path}")
        self._session = session(path, context.device)
        self._input = self._session.get_inputs()[0].name
        self.width, self.height = width, height
        self._normalise = normalise
        default = CUDA_BATCH if context.device.startswith("cuda") else 1
        self.batch = max(1, int(context.options.get("crop_batch", default)))

    def run(self, crops: Sequence[BGRImage]) -> Floats:
        """One row of the network's output per crop (an empty crop gets a grey input)."""
        if not crops:
            return np.zeros((0, 0), dtype=np.float32)
        fitted = []
        grey = np.full((self.height, self.width, 3), 128, dtype=np.uint8)
        for crop in crops:
            image = crop if crop.size else grey
            fitted.append(letterbox(image, self.width, self.height, 128).canvas[:, :, ::-1])
        rows = []
        for start in range(0, len(fitted), self.batch):
            chunk = self._normalise(np.stack(fitted[start : start + self.batch]).astype(np.float32))
            nchw = np.ascontiguousarray(chunk.transpose(0, 3, 1, 2), dtype=np.float32)
            (out,) = self._session.run(None, {self._input: nchw})[:1]
            rows.append(np.asarray(out, dtype=np.float32).reshape(len(nchw), -1))
        return np.concatenate(rows)

    def warmup(self, crops: int) -> None:
        """Run the largest batch a frame of ``crops`` crops brings, once: the zoo's measurement
        then includes a busy frame's buffers. One batch is enough (later batches reuse the
        arena), and a longer warm-up only lets the process' other allocations into the
        measurement window."""
        self.run([np.zeros((self.height, self.width, 3), dtype=np.uint8)] * min(crops, self.batch))

    def close(self) -> None:
        del self._session


def efficientnet_lite(pixels: Floats) -> Floats:
    """EfficientNet-Lite0's input scale: ``(x − 127) / 128``."""
    return (pixels - np.float32(127.0)) / np.float32(128.0)


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


def imagenet_mean_std(pixels: Floats) -> Floats:
    return (pixels - IMAGENET_MEAN) / IMAGENET_STD
