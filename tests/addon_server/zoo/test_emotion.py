"""Facial expression (mini-Xception, FER2013) on real faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from addon_server.errors import ModelNotInstalledError
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.boxes import Box
from addon_server.zoo.models.emotion import EMOTIONS, EmotionClassifier
from tests.addon_server.conftest import SHARED_MODELS, needs_shared_models
from tests.addon_server.zoo.real_photos import load_with_figures, photo, same_answers

pytestmark = needs_shared_models("emotion.onnx")
CPU = LoadContext(models_dir=SHARED_MODELS, device="cpu")


@pytest.fixture(scope="module")
def model() -> EmotionClassifier:
    return load_with_figures(EmotionClassifier, CPU)


def test_a_missing_file_is_not_installed_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalledError, match=str(tmp_path / "emotion.onnx")):
        EmotionClassifier(LoadContext(tmp_path, "cpu"))


def test_the_smiling_astronaut_is_happy(model: EmotionClassifier) -> None:
    result = model.infer(Frame(photo("astronaut")))
    (face,) = result.faces
    assert face.emotion == "happy"
    assert face.confidence > 0.9
    assert len(face.scores) == len(EMOTIONS)
    assert abs(sum(face.scores) - 1.0) < 1e-3
    assert result.context_lines() == [f"Facial expression: happy ({face.confidence:.0%})"]
    assert result.as_json()["faces"][0]["scores"]["happy"] > 0.9


def test_a_mirrored_face_gives_the_same_expression(model: EmotionClassifier) -> None:
    mirrored = np.ascontiguousarray(photo("astronaut")[:, ::-1])
    assert model.infer(Frame(mirrored)).emotions == ("happy",)


def test_a_weak_answer_is_uncertain_and_silent(model: EmotionClassifier) -> None:
    strict = EmotionClassifier(LoadContext(SHARED_MODELS, "cpu", {"min_confidence": 1.01}))
    result = strict.infer(Frame(photo("astronaut")))
    assert result.emotions == ("uncertain",)
    assert result.context_lines() == []
    strict.close()


def test_no_face_no_answer(model: EmotionClassifier) -> None:
    assert model.infer(Frame(photo("coffee"))).faces == ()


def test_classify_given_boxes_in_frame_pixels(model: EmotionClassifier) -> None:
    (face,) = model.classify(Frame(photo("astronaut")), [Box(182, 58, 88, 120)])
    assert face.bbox == Box(182, 58, 88, 120)
    assert face.emotion == "happy"


def test_concurrent_calls_give_the_same_answers(model: EmotionClassifier) -> None:
    answers = same_answers(model, [Frame(photo("zidane")), Frame(photo("astronaut"))])
    assert [len(a["faces"]) for a in answers] == [2, 1]


def test_warmup_and_close() -> None:
    model = EmotionClassifier(CPU)
    model.warmup()
    model.close()
    with pytest.raises((AttributeError, RuntimeError)):  # closed: no session, no faces
        model.infer(Frame(photo("astronaut")))
