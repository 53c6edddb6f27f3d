"""MoveNet multipose on real photos: people, keypoints, postures."""

from __future__ import annotations

import numpy as np
import pytest

from addon_server.errors import ModelNotInstalledError
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.pose import KEYPOINTS, MoveNetPose, input_size, posture_of
from tests.addon_server.conftest import SHARED_MODELS, needs_shared_models
from tests.addon_server.zoo.real_photos import (
    BUS_PERSONS,
    load_with_figures,
    photo,
    same_answers,
)

pytestmark = needs_shared_models("movenet-multipose.onnx")
NOSE, L_HIP, R_HIP = (KEYPOINTS.index(n) for n in ("nose", "left_hip", "right_hip"))


@pytest.fixture(scope="module")
def pose() -> MoveNetPose:
    return load_with_figures(MoveNetPose, LoadContext(SHARED_MODELS, "cpu"))


def test_two_people_on_zidane_with_their_heads_above_their_hips(pose: MoveNetPose) -> None:
    result = pose.infer(Frame(photo("zidane")))
    assert len(result.persons) == 2
    for person in result.persons:
        nose, hips = person.keypoints[NOSE], (person.keypoints[L_HIP], person.keypoints[R_HIP])
        assert nose[2] > 0.3
        assert all(nose[1] < hip[1] for hip in hips if hip[2] > 0.2)
        assert 0 <= nose[0] <= 1280 and 0 <= nose[1] <= 720
    # The two are far apart: Ancelotti left of centre, Zidane right.
    centres = sorted(p.bbox.x + p.bbox.width / 2 for p in result.persons)
    assert centres[0] < 640 < centres[1]
    body = result.as_json()
    assert set(body["persons"][0]["keypoints"]) == set(KEYPOINTS)


def test_a_person_turned_on_their_side_is_never_called_standing(pose: MoveNetPose) -> None:
    """MoveNet sees the turned person but hardly their hips (score ~0.06 here): the posture
    is then unknown rather than a guess; the lying rule itself is checked on keypoints below."""
    standing = np.ascontiguousarray(photo("zidane")[20:720, 700:1180])
    up = pose.infer(Frame(standing))
    assert up.persons and up.persons[0].posture == "standing"
    turned = pose.infer(Frame(np.ascontiguousarray(np.rot90(standing))))
    assert turned.persons
    assert turned.persons[0].posture in {"lying", "unknown"}


@pytest.mark.parametrize("turns", [1, 3])
def test_a_whole_person_turned_on_their_side_is_lying(pose: MoveNetPose, turns: int) -> None:
    """bus.jpg's left-hand man, head to toe, on a camera-sized grey frame: upright he is
    standing; turned 90° either way he is lying, with the lying_down alert and its sentence."""
    man = BUS_PERSONS[0]
    body = photo("bus")[man.y : man.y + man.height, man.x : man.x + man.width]

    def on_frame(pixels: np.ndarray) -> Frame:
        canvas = np.full((720, 1280, 3), 128, dtype=np.uint8)
        canvas[100 : 100 + pixels.shape[0], 300 : 300 + pixels.shape[1]] = pixels
        return Frame(canvas)

    (upright,) = pose.infer(on_frame(body)).persons
    assert upright.posture == "standing"
    result = pose.infer(on_frame(np.rot90(body, turns)))
    (person,) = result.persons
    assert (person.posture, person.alerts) == ("lying", ("lying_down",))
    assert person.bbox.width > person.bbox.height  # the box is the turned body, frame px
    assert result.context_lines() == ["Posture: lying (possible fall or injury)"]


def test_posture_rules_on_hand_made_keypoints() -> None:
    def person(**points: tuple[float, float]) -> tuple[tuple[float, float, float], ...]:
        return tuple((*points[n], 0.9) if n in points else (0.0, 0.0, 0.0) for n in KEYPOINTS)

    upright = {"left_shoulder": (90, 100), "right_shoulder": (110, 100), "left_hip": (92, 200),
               "right_hip": (108, 200)}  # fmt: skip
    assert posture_of(person(**upright, left_ankle=(92, 360), right_ankle=(108, 360)))[0] == (
        "standing"
    )
    assert posture_of(person(**upright, left_ankle=(80, 260), right_ankle=(120, 260)))[0] == (
        "crouching"
    )
    assert posture_of(person(**upright, left_ankle=(20, 360), right_ankle=(180, 360)))[0] == (
        "running"
    )
    lying = {"left_shoulder": (100, 90), "right_shoulder": (100, 110), "left_hip": (200, 92),
             "right_hip": (200, 108)}  # fmt: skip
    assert posture_of(person(**lying)) == ("lying", ("lying_down",))
    raised = person(**upright, nose=(100, 80), left_wrist=(80, 40), right_wrist=(120, 40))
    assert "hands_raised" in posture_of(raised)[1]
    assert posture_of(person(nose=(100, 80)))[0] == "unknown"


def test_input_sides_are_multiples_of_32() -> None:
    assert input_size(1280, 720) == (256, 160)
    assert input_size(810, 1080) == (192, 256)


def test_concurrent_calls_agree_and_missing_weights_are_named(pose: MoveNetPose, tmp_path) -> None:
    same_answers(pose, [Frame(photo("zidane")), Frame(photo("bus"))])
    with pytest.raises(ModelNotInstalledError, match=str(tmp_path / "movenet-multipose.onnx")):
        MoveNetPose(LoadContext(tmp_path, "cpu"))
