"""Plate detection (platedet) and OCR (PP-OCRv4 via rapidocr) on rendered plates and photos.

No real photo of a car with a readable plate is available offline, so the detector is shown
on a rendered Mercosul-style plate on a rendered car, and shown to find no plate on the real
photos; the OCR reads a rendered plate-like image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from addon_server.detector.base import Detection
from addon_server.errors import ModelNotInstalledError
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.boxes import Box
from addon_server.zoo.models.plates import PLATE_FILE, PlateReader, clean_text
from addon_server.zoo.registry import SPECS, missing, resolve_file
from tests.addon_server.zoo.real_photos import load_with_figures, photo, same_answers

PLATE_ONNX = resolve_file(PLATE_FILE, Path("/nonexistent"))
CPU = LoadContext(models_dir=Path("/nonexistent"), device="cpu")
pytestmark = pytest.mark.skipif(
    not PLATE_ONNX.is_file(), reason=f"needs platedet==0.0.2 (--no-deps): {PLATE_ONNX}"
)
PLATE = Box(250, 308, 140, 45)
CAR = Detection("car", 0.9, 60, 100, 520, 340)


@pytest.fixture(scope="module")
def reader() -> PlateReader:
    pytest.importorskip("rapidocr_onnxruntime")
    return load_with_figures(PlateReader, CPU)


def _plate_image(text: str = "ABC1D23") -> np.ndarray:
    image = np.full((120, 420, 3), 255, dtype=np.uint8)
    cv2.putText(image, text, (20, 85), cv2.FONT_HERSHEY_SIMPLEX, 2.2, (0, 0, 0), 5)
    return image


def _car_scene(text: str = "ABC1D23") -> np.ndarray:
    """A dark car body on a noisy street with a white, blue-banded (Mercosul) plate."""
    rng = np.random.default_rng(0)
    scene = np.clip(rng.normal(90, 20, (480, 640, 3)), 0, 255).astype(np.uint8)
    cv2.rectangle(scene, (60, 100), (580, 440), (50, 50, 60), -1)
    x, y, w, h = PLATE.x, PLATE.y, PLATE.width, PLATE.height
    cv2.rectangle(scene, (x, y), (x + w, y + h), (245, 245, 245), -1)
    cv2.rectangle(scene, (x, y), (x + w, y + h // 5), (160, 60, 0), -1)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, 0.93, 1)
    origin = (x + (w - tw) // 2, y + h - (h - th) // 3)
    cv2.putText(scene, text, origin, cv2.FONT_HERSHEY_DUPLEX, 0.93, (0, 0, 0), 1)
    cv2.rectangle(scene, (x, y), (x + w, y + h), (20, 20, 20), 2)
    return np.asarray(cv2.GaussianBlur(scene, (0, 0), 0.8))


def test_the_registry_row_finds_the_weights_inside_platedet() -> None:
    (spec,) = [s for s in SPECS if s.name == "plate_reader"]
    assert missing(spec, Path("/nonexistent")) == []
    assert PLATE_ONNX.parts[-3:] == ("platedet", "artifacts", "platedet.onnx")


def test_a_missing_file_is_not_installed_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalledError, match=str(tmp_path / "platedet.onnx")):
        PlateReader(LoadContext(tmp_path, "cpu", {"file": "platedet.onnx"}))


def test_without_rapidocr_the_reader_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # import raises ImportError
    with pytest.raises(ModelNotInstalledError, match="rapidocr_onnxruntime"):
        PlateReader(CPU)


def test_ocr_reads_a_rendered_plate(reader: PlateReader) -> None:
    text, confidence = reader.read_text(_plate_image())
    assert text == "ABC1D23"
    assert confidence > 0.9


def test_ocr_of_a_blank_plate_is_none(reader: PlateReader) -> None:
    assert reader.read_text(np.full((60, 200, 3), 255, dtype=np.uint8)) == (None, 0.0)


@pytest.mark.parametrize("detections", [(), (CAR,)], ids=["whole-frame", "car-crop"])
def test_a_rendered_plate_on_a_car_is_found_and_read(
    reader: PlateReader, detections: tuple[Detection, ...]
) -> None:
    result = reader.infer(Frame(_car_scene(), detections))
    (plate,) = result.plates
    assert plate.bbox.iou(PLATE) > 0.7
    assert plate.confidence >= 0.5
    assert plate.text == "ABC1D23"
    assert result.context_lines() == [f"Licence plate: ABC1D23 (read {plate.text_confidence:.0%})"]


@pytest.mark.parametrize("name", ["bus", "zidane", "coffee"])
def test_no_plate_in_photos_without_one(reader: PlateReader, name: str) -> None:
    result = reader.infer(Frame(photo(name)))
    assert result.plates == ()
    assert result.context_lines() == []


def test_only_vehicle_boxes_are_searched_when_given(reader: PlateReader) -> None:
    """A box elsewhere (a person) does not make the reader search the whole frame."""
    person_only = Frame(_car_scene(), (Detection("person", 0.9, 0, 0, 50, 100),))
    assert len(reader.infer(person_only).plates) == 1  # no vehicle: the whole frame
    away = Detection("truck", 0.8, 0, 0, 200, 90)  # a vehicle box away from the plate
    assert reader.infer(Frame(_car_scene(), (away,))).plates == ()


def test_clean_text_keeps_letters_and_digits() -> None:
    assert clean_text("abc-1d23 ") == "ABC1D23"
    assert clean_text("·:") == ""


def test_concurrent_calls_give_the_same_answers(reader: PlateReader) -> None:
    answers = same_answers(reader, [Frame(_car_scene(), (CAR,)), Frame(photo("bus"))], repeats=2)
    assert answers[0]["plates"][0]["text"] == "ABC1D23"
    assert answers[1] == {"plates": []}


def test_warmup_and_close() -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    reader = PlateReader(CPU)
    reader.warmup()
    reader.close()
    with pytest.raises((AttributeError, TypeError)):
        reader.infer(Frame(_car_scene()))
