"""Licence plates: platedet's YOLOv8 plate detector, then PP-OCRv4 (rapidocr) on each plate.

Weights: ``platedet==0.0.2`` ships ``artifacts/platedet.onnx`` (AGPL-3.0; trained mostly on
Brazilian plates, unverified on others) and ``rapidocr-onnxruntime`` ships the PP-OCRv4 text
detector, recogniser and angle classifier. Neither package's detector code is used: the plate
model is a YOLOv8-seg export (float16 input, 640x640 letterboxed RGB/255; ``output0`` is
4 box values + 1 class score + 32 mask coefficients per anchor), decoded here for boxes only;
the masks are not needed to crop a plate.

Plates are searched in the frame's vehicle boxes (the ``max_crops`` largest cars,
trucks, buses and motorcycles, padded), else in the whole frame. A plate's text is the OCR line
with the tallest box (a Mercosul plate's "BRASIL" band is smaller than its characters), reduced
to upper-case letters and digits. A plate the OCR cannot read is still reported, with no text.

On the test material: no plate on bus.jpg, zidane.jpg or coffee (no false plates); a rendered
Mercosul-style plate on a rendered car scored 0.76, a flat grey plate almost nothing. No real
photo of a car with a readable plate was on this machine, so the detector is unproven on real
cars here. ``RapidOCR`` keeps per-call state in its objects, so OCR holds a lock; the plate
detector runs on onnxruntime (thread-safe). RapidOCR's CUDA option always uses GPU 0, so it
is asked for only when the zoo device is ``cuda:0``; on another GPU the OCR runs on the CPU.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from addon_server.errors import ModelNotInstalledError
from addon_server.imaging import BGRImage
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.boxes import Box, crop_limit, largest, letterbox, padded_region
from addon_server.zoo.models.onnx import session
from addon_server.zoo.registry import resolve_file

PLATE_FILE = "pkg:platedet/artifacts/platedet.onnx"
PLATE_VEHICLES = ("car", "truck", "bus", "motorcycle")
SIZE = 640
_NOT_PLATE_TEXT = re.compile(r"[^A-Z0-9]")
OCR_DETECT_SIDE = 160
"""RapidOCR enlarges an image until its shorter side is this (its default, 736, is for pages).

A plate crop enlarged to 736 px high cost 396 MiB RSS and ~330 ms per plate here; at 160 the
same rendered plates (80–180 px wide) read the same in ~30 ms for 92 MiB."""


@dataclass(frozen=True, slots=True)
class Plate:
    text: str | None
    """Upper-case letters and digits, or None when the OCR read nothing."""
    confidence: float
    """The plate detector's score."""
    text_confidence: float
    bbox: Box

    def as_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "confidence": round(self.confidence, 3),
            "text_confidence": round(self.text_confidence, 3),
            "bbox": self.bbox.as_json(),
        }


@dataclass(frozen=True, slots=True)
class PlateResult:
    plates: tuple[Plate, ...]

    def as_json(self) -> dict[str, Any]:
        return {"plates": [p.as_json() for p in self.plates]}

    def context_lines(self) -> list[str]:
        return [
            f"Licence plate: {p.text} (read {p.text_confidence:.0%})"
            if p.text
            else f"Licence plate seen but unreadable ({p.confidence:.0%})"
            for p in self.plates
        ]


def clean_text(text: str) -> str:
    return _NOT_PLATE_TEXT.sub("", text.upper())


class PlateReader:
    """Plate boxes on vehicles, then their text."""

    def __init__(self, context: LoadContext) -> None:
        path = resolve_file(str(context.options.get("file", PLATE_FILE)), context.models_dir)
        if not path.is_file():
            raise ModelNotInstalledError(
                f"plate detector not installed: {path} (pip install --no-deps platedet==0.0.2)"
            )
        try:
            from rapidocr_onnxruntime import RapidOCR  # type: ignore[import-untyped]
        except ImportError as error:
            raise ModelNotInstalledError(
                f"plate OCR not installed: python module rapidocr_onnxruntime ({error})"
            ) from error
        self.min_confidence = float(context.options.get("min_confidence", 0.5))
        self.max_crops = crop_limit(context.options)
        self._detector = session(path, context.device)
        on_gpu0 = context.device == "cuda:0"
        self._ocr: Any = RapidOCR(
            det_use_cuda=on_gpu0,
            cls_use_cuda=on_gpu0,
            rec_use_cuda=on_gpu0,
            det_limit_side_len=OCR_DETECT_SIDE,
            print_verbose=False,
        )
        self._ocr_lock = threading.Lock()

    def infer(self, frame: Frame) -> PlateResult:
        boxes = self.find(frame)
        return PlateResult(tuple(self._read_plate(frame.pixels, box, s) for box, s in boxes))

    def find(self, frame: Frame) -> list[tuple[Box, float]]:
        """Plate boxes (frame pixels) with their scores, best first."""
        pixels = frame.pixels
        height, width = pixels.shape[:2]
        vehicles = largest(frame.of_class(*PLATE_VEHICLES), self.max_crops)
        regions = [padded_region(v, 0.05, 0.05, width, height) for v in vehicles]
        if not vehicles:
            regions = [(0, 0, width, height)]
        found: list[tuple[Box, float]] = []
        for x1, y1, x2, y2 in regions:
            if x2 - x1 >= 16 and y2 - y1 >= 16:
                found.extend(self._detect(pixels[y1:y2, x1:x2], x1, y1, width, height))
        kept: list[tuple[Box, float]] = []
        for box, score in sorted(found, key=lambda item: -item[1]):
            if all(box.iou(other) < 0.5 for other, _ in kept):
                kept.append((box, score))
        return kept[: self.max_crops]

    def _detect(
        self, region: BGRImage, left: int, top: int, frame_w: int, frame_h: int
    ) -> list[tuple[Box, float]]:
        fitted = letterbox(region, SIZE, SIZE, fill=114)
        rgb = fitted.canvas[:, :, ::-1].transpose(2, 0, 1)[None]
        blob = (rgb.astype(np.float32) / 255.0).astype(np.float16)
        outputs = self._detector.run(["output0"], {"images": blob})
        anchors = np.asarray(outputs[0][0], dtype=np.float32)  # 37 x anchors
        scores = anchors[4]
        picked = np.nonzero(scores >= self.min_confidence)[0]
        if picked.size == 0:
            return []
        cx, cy, bw, bh = anchors[:4, picked]
        corners = np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1)
        keep = cv2.dnn.NMSBoxes(corners.tolist(), scores[picked].tolist(), self.min_confidence, 0.5)
        plates = []
        for i in np.asarray(keep, dtype=np.int64).reshape(-1):
            x, y, w, h = corners[i]
            x1 = left + (x - fitted.left) / fitted.scale
            y1 = top + (y - fitted.top) / fitted.scale
            box = Box.from_corners(
                x1, y1, x1 + w / fitted.scale, y1 + h / fitted.scale, frame_w, frame_h
            )
            plates.append((box, float(scores[picked][i])))
        return plates

    def read_text(self, plate: BGRImage) -> tuple[str | None, float]:
        """The plate's characters and the OCR's confidence (None, 0 when nothing is read)."""
        with self._ocr_lock:
            lines, _ = self._ocr(plate)
        best: tuple[float, str, float] | None = None
        for points, text, score in lines or ():
            ys = [p[1] for p in points]
            height = max(ys) - min(ys)
            cleaned = clean_text(str(text))
            if cleaned and (best is None or height > best[0]):
                best = (height, cleaned, float(score))
        if best is None:
            return None, 0.0
        return best[1], best[2]

    def _read_plate(self, pixels: BGRImage, box: Box, score: float) -> Plate:
        height, width = pixels.shape[:2]
        x1, y1, x2, y2 = padded_region(box, 0.08, 0.15, width, height)
        text, text_confidence = self.read_text(np.ascontiguousarray(pixels[y1:y2, x1:x2]))
        return Plate(text, score, text_confidence, box)

    def warmup(self) -> None:
        blank = np.full((120, 420, 3), 255, dtype=np.uint8)
        cv2.putText(blank, "ABC1D23", (20, 85), cv2.FONT_HERSHEY_SIMPLEX, 2.2, (0, 0, 0), 5)
        self.read_text(blank)
        self._detect(np.zeros((360, 640, 3), dtype=np.uint8), 0, 0, 640, 360)

    def close(self) -> None:
        with self._ocr_lock:
            self._ocr = None
        del self._detector
