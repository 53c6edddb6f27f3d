"""MediaPipe Meet person masks on the detector's person boxes of real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from addon_server.detector.base import Detection
from addon_server.errors import ModelNotInstalledError
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.segmentation import PersonSegmenter
from tests.addon_server.conftest import SHARED_MODELS, needs_shared_models
from tests.addon_server.zoo.real_photos import (
    BUS_PERSONS,
    ZIDANE_PERSONS,
    load_with_figures,
    photo,
    same_answers,
)

pytestmark = needs_shared_models("meet.onnx")
CPU = LoadContext(models_dir=SHARED_MODELS, device="cpu")


@pytest.fixture(scope="module")
def model() -> PersonSegmenter:
    return load_with_figures(PersonSegmenter, CPU)


def test_a_missing_file_is_not_installed_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalledError, match=str(tmp_path / "meet.onnx")):
        PersonSegmenter(LoadContext(tmp_path, "cpu"))


def test_most_of_each_zidane_person_box_is_body(model: PersonSegmenter) -> None:
    result = model.infer(Frame(photo("zidane"), ZIDANE_PERSONS))
    assert len(result.persons) == 2
    for person, detection in zip(result.persons, ZIDANE_PERSONS, strict=True):
        assert person.bbox.x == detection.x and person.bbox.width == detection.width
        assert person.person_fraction > 0.5
        assert person.mask_bbox is not None
        assert person.mask_bbox.iou(person.bbox) > 0.5
        assert min(person.thirds) > 0.2
    assert result.context_lines() == []


def test_no_person_box_no_work(model: PersonSegmenter) -> None:
    result = model.infer(Frame(photo("chelsea")))
    assert result.persons == ()
    assert result.as_json() == {"persons": []}


def test_a_box_on_a_blank_wall_is_not_a_visible_body(model: PersonSegmenter) -> None:
    wall = np.full((480, 640, 3), 180, dtype=np.uint8)
    result = model.infer(Frame(wall, (Detection("person", 0.4, 200, 60, 150, 360),)))
    (person,) = result.persons
    assert person.person_fraction < 0.3
    assert result.context_lines()[0].startswith("Person partly visible")


def test_other_detections_are_ignored_and_crops_are_bounded(model: PersonSegmenter) -> None:
    many = BUS_PERSONS * 3 + (Detection("bus", 0.66, 0, 235, 808, 501),)
    result = model.infer(Frame(photo("bus"), many))
    assert len(result.persons) == 8
    assert all(p.bbox.width != 51 for p in result.persons)  # the smallest box is left out


def test_concurrent_calls_give_the_same_answers(model: PersonSegmenter) -> None:
    frames = [Frame(photo("zidane"), ZIDANE_PERSONS), Frame(photo("bus"), BUS_PERSONS)]
    assert [len(a["persons"]) for a in same_answers(model, frames)] == [2, 4]


def test_warmup_and_close() -> None:
    model = PersonSegmenter(CPU)
    model.warmup()
    model.close()
    with pytest.raises(AttributeError):
        model.infer(Frame(photo("zidane"), ZIDANE_PERSONS))


def test_the_zoo_max_crops_option_bounds_the_crops() -> None:
    model = PersonSegmenter(LoadContext(SHARED_MODELS, "cpu", {"max_crops": 2}))
    result = model.infer(Frame(photo("bus"), BUS_PERSONS))
    assert [p.bbox.width for p in result.persons] == [165, 171]  # the two largest boxes
    model.close()
