"""What the crop families share: an ONNX network run on a batch of detector crops.

Pet, vehicle, threat and appearance models all cut boxes out of the frame, fit each into the
network's input (letterboxed on grey, so a tall person or a gun at the edge of a crop is not cut
off), normalise, and run one batch. onnxruntime's ``run`` is thread-safe, so no lock is held.
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

    def run(self, crops: Sequence[BGRImage]) -> Floats:
        """One row of the network's output per crop (an empty crop gets a grey input)."""
        if not crops:
            return np.zeros((0, 0), dtype=np.float32)
        fitted = []
        grey = np.full((self.height, self.width, 3), 128, dtype=np.uint8)
        for crop in crops:
            image = crop if crop.size else grey
            fitted.append(letterbox(image, self.width, self.height, 128).canvas[:, :, ::-1])
        batch = self._normalise(np.stack(fitted).astype(np.float32))
        nchw = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
        (out,) = self._session.run(None, {self._input: nchw})[:1]
        return np.asarray(out, dtype=np.float32).reshape(len(crops), -1)

    def close(self) -> None:
        del self._session


def efficientnet_lite(pixels: Floats) -> Floats:
    """EfficientNet-Lite0's input scale: ``(x − 127) / 128``."""
    return (pixels - np.float32(127.0)) / np.float32(128.0)


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


def imagenet_mean_std(pixels: Floats) -> Floats:
    return (pixels - IMAGENET_MEAN) / IMAGENET_STD
