"""Face embedders as data: which ONNX file, which tensors, which input scale, which threshold.

Both specs use the pretrained ONNX files in the shared model folder (see its README). Measured
on the test photos (astronaut vs the same face rescaled, shifted and brightened, vs zidane.jpg):
``faceres``' 1024-d descriptor fed 0–255 pixels separates them clearly (cosine 0.99 same person
vs about 0.5 another), while ``mobilefacenet``'s 192-d embeddings sit in a narrow cone (0.9996
vs 0.96). So ``faceres`` is the default and ``mobilefacenet`` stays selectable behind the same
interface with its own threshold. Where a file is absent the embedder reports the model as not
installed; it never invents a vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from addon_server.errors import ModelNotInstalledError
from addon_server.imaging import BGRImage
from addon_server.reid.faces import FaceBox
from addon_server.store import Vector
from addon_server.zoo.models.onnx import session


@dataclass(frozen=True, slots=True)
class EmbedderSpec:
    name: str
    file: str
    input_name: str
    output_name: str
    size: int
    scale: float
    threshold: float
    margin: float = 0.0


FACE_EMBEDDERS = {
    "faceres": EmbedderSpec(
        "faceres", "faceres.onnx", "input_1:0", "global_pooling/Mean", 224, 1.0, threshold=0.8
    ),
    "mobilefacenet": EmbedderSpec(
        "mobilefacenet",
        "mobilefacenet.onnx",
        "img_inputs:0",
        "embeddings:0",
        112,
        1.0,
        threshold=0.99,
    ),
}


class OnnxFaceEmbedder:
    """Embeds face crops with an ONNX model on onnxruntime (CPU or CUDA provider).

    One session serves every worker thread: onnxruntime documents ``InferenceSession.run`` as
    safe to call from several threads at once (unlike OpenCV's cascade, see ``faces.py``), and
    :meth:`embed` keeps no state of its own between calls.
    """

    kind = "face"

    def __init__(self, spec: EmbedderSpec, models_dir: Path, device: str = "cpu") -> None:
        path = models_dir / spec.file
        if not path.is_file():
            raise ModelNotInstalledError(f"face embedder {spec.name} not installed: {path}")
        self.spec = spec
        self.name = spec.name
        self.threshold = spec.threshold
        self._session = session(path, device)

    def embed(self, pixels: BGRImage, faces: Sequence[FaceBox]) -> list[Vector]:
        if not faces:
            return []
        size = self.spec.size
        crops = []
        height, width = pixels.shape[:2]
        for face in faces:
            pad = int(face.width * self.spec.margin)
            x1, y1 = max(0, face.x - pad), max(0, face.y - pad)
            x2 = min(width, face.x + face.width + pad)
            y2 = min(height, face.y + face.height + pad)
            crop = cv2.resize(pixels[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)
            crops.append(crop[:, :, ::-1])  # RGB
        batch = np.ascontiguousarray(np.stack(crops), dtype=np.float32) * np.float32(
            self.spec.scale
        )
        (out,) = self._session.run([self.spec.output_name], {self.spec.input_name: batch})
        vectors = np.asarray(out, dtype=np.float32).reshape(len(faces), -1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return list(vectors / np.maximum(norms, 1e-12))
