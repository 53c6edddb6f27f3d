"""The transformers families, each loaded from a tiny random checkpoint folder built here.

No registry ships these weights, so every loader reads a folder that
:mod:`tests.addon_server.zoo.tiny_transformers` writes the way ``save_pretrained`` writes the
real model's (config, weights, image processor, tokenizer). The output of such a model is real
inference of meaningless weights: the tests assert shapes, types, ranges, label sets, the crops
a family looks at and the not_installed paths, never what the model "saw".
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import pytest

from addon_server.app import create_app
from addon_server.detector.base import Detection
from addon_server.errors import ModelNotInstalledError
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models import transformers_models as tm
from addon_server.zoo.models.pose import KEYPOINTS
from addon_server.zoo.registry import SPECS
from tests.addon_server.zoo import tiny_transformers as tiny
from tests.addon_server.zoo.real_photos import (
    ZIDANE_PERSONS,
    load_with_figures,
    photo,
    same_answers,
)

pytest.importorskip("transformers")

JPEG = {"Content-Type": "image/jpeg"}

FAMILIES: dict[str, type[tm.HFModel]] = {
    "vitpose": tm.VitPose,
    "depth_estimator": tm.DepthEstimator,
    "fashion_clip": tm.ClothingClip,
    "clip_vitl": tm.ClipEmbedder,
    "xclip_action": tm.ActionRecognizer,
    "florence2": tm.FlorenceAttributes,
    "violence_detector": tm.ViolenceClassifier,
    "weather_classifier": tm.WeatherClassifier,
    "segformer_clothes": tm.ClothesSegmenter,
}
WEATHER = ("clear", "fog", "rain", "snow", "night")
XCLIP_FRAMES = 4
BUILDERS: dict[str, Callable[[Path], None]] = {
    "vitpose": tiny.vitpose,
    "depth": tiny.depth_anything,
    "clip": tiny.clip,
    "siglip": lambda f: tiny.clip(f, siglip=True),
    "xclip": lambda f: tiny.xclip(f, XCLIP_FRAMES),
    "florence": tiny.florence2,
    "violence": lambda f: tiny.classifier(f, ("NonViolence", "Violence")),
    "weather": lambda f: tiny.classifier(f, WEATHER),
    "clothes": tiny.segformer,
}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transformers-zoo")
    for name, build in BUILDERS.items():
        (root / name).mkdir()
        build(root / name)
    return root


M = TypeVar("M", bound=tm.HFModel)


def _load(cls: type[M], models_dir: Path, folder: str, **options: object) -> M:
    return load_with_figures(cls, LoadContext(models_dir, "cpu", {"folder": folder, **options}))


def _zidane() -> Frame:
    return Frame(photo("zidane"), ZIDANE_PERSONS)


def _unit_rows(vectors: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4))


# --- every family -------------------------------------------------------------------------------


def test_registry_rows_name_these_loaders_and_folders() -> None:
    rows = {s.name: s for s in SPECS if s.name in FAMILIES}
    assert set(rows) == set(FAMILIES)
    for name, cls in FAMILIES.items():
        assert rows[name].resolve_loader() is cls  # type: ignore[comparison-overlap]
        assert rows[name].files == (cls.default_folder,)
        assert rows[name].requires == ("transformers",)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_missing_folder_is_not_installed_naming_the_path(tmp_path: Path, name: str) -> None:
    cls = FAMILIES[name]
    with pytest.raises(ModelNotInstalledError, match=str(tmp_path / cls.default_folder)):
        cls(LoadContext(tmp_path, "cpu"))
    (tmp_path / "empty").mkdir()  # a folder without config.json is not a checkpoint either
    with pytest.raises(ModelNotInstalledError, match=str(tmp_path / "empty")):
        cls(LoadContext(tmp_path, "cpu", {"folder": "empty"}))


def test_florence_in_its_remote_code_form_is_not_installed_with_the_reason(tmp_path: Path) -> None:
    folder = tmp_path / "florence-2-base"
    folder.mkdir()
    auto_map = {"AutoConfig": "configuration_florence2.Florence2Config"}
    (folder / "config.json").write_text(
        json.dumps({"model_type": "florence2", "auto_map": auto_map})
    )
    with pytest.raises(ModelNotInstalledError, match="trust_remote_code") as caught:
        tm.FlorenceAttributes(LoadContext(tmp_path, "cpu"))
    assert str(folder) in str(caught.value)


def test_close_drops_the_model(models_dir: Path) -> None:
    model = tm.WeatherClassifier(LoadContext(models_dir, "cpu", {"folder": "weather"}))
    model.warmup()
    model.close()
    with pytest.raises(RuntimeError, match="closed"):
        model.infer(_zidane())


# --- ViTPose ------------------------------------------------------------------------------------


def test_vitpose_gives_17_keypoints_per_person_box(models_dir: Path) -> None:
    model = _load(tm.VitPose, models_dir, "vitpose")
    frame = _zidane()
    result = model.infer(frame)
    assert len(result.persons) == len(ZIDANE_PERSONS)
    for person, box in zip(result.persons, ZIDANE_PERSONS, strict=True):
        assert len(person.keypoints) == len(KEYPOINTS)
        assert (person.bbox.x, person.bbox.y, person.bbox.width) == (box.x, box.y, box.width)
        assert person.score == box.confidence
        assert person.posture in {"standing", "crouching", "lying", "running", "unknown"}
        # Keypoints come back in frame pixels around the region the processor cut (the box
        # widened to the 48x64 input's aspect, grown 25 %); the sub-pixel refinement of an
        # untrained model's flat heatmaps moves points by a few cells, so allow twice the size.
        aspect = 48 / 64
        half_w = max(box.width, box.height * aspect) * 1.25 / 2
        half_h = max(box.height, box.width / aspect) * 1.25 / 2
        cx, cy = box.x + box.width / 2, box.y + box.height / 2
        for x, y, score in person.keypoints:
            assert abs(x - cx) <= 2 * half_w and abs(y - cy) <= 2 * half_h
            assert np.isfinite(score)  # a heatmap peak, not a probability
    zidane, ancelotti = (np.mean([k[0] for k in p.keypoints]) for p in result.persons)
    assert zidane > ancelotti  # each person's points sit on their own box (Zidane is right)
    assert result.postures == tuple(p.posture for p in result.persons)
    json.dumps(result.as_json())
    assert model.infer(Frame(photo("zidane"))).persons == ()  # no person box, no work


# --- Depth Anything -----------------------------------------------------------------------------


def test_depth_map_is_the_frames_size_with_consistent_statistics(models_dir: Path) -> None:
    model = _load(tm.DepthEstimator, models_dir, "depth")
    pixels = photo("bus")
    result = model.infer(Frame(pixels))
    assert (result.height, result.width) == pixels.shape[:2]
    assert result.min <= result.mean <= result.max
    png = cv2.imdecode(np.frombuffer(base64.b64decode(result.png_base64), np.uint8), -1)
    assert png.dtype == np.uint16 and png.shape == pixels.shape[:2]
    assert result.max > result.min
    assert png.min() == 0 and png.max() == 65535  # scaled from the map's own min to max
    body = result.as_json()
    assert set(body) == {"min", "max", "mean", "width", "height", "png_base64"}
    assert result.context_lines() == []
    same_answers(model, [Frame(pixels)], repeats=2)


def test_a_flat_depth_map_encodes_as_zeros() -> None:
    png = cv2.imdecode(
        np.frombuffer(base64.b64decode(tm.depth_png(np.full((4, 6), 3.0, np.float32))), np.uint8),
        -1,
    )
    assert png.shape == (4, 6) and not png.any()


# --- CLIP / SigLIP ------------------------------------------------------------------------------


def test_clothing_clip_picks_one_choice_per_group_for_each_person(models_dir: Path) -> None:
    model = _load(tm.ClothingClip, models_dir, "clip")
    assert not model.siglip
    result = model.infer(_zidane())
    assert [p.bbox.x for p in result.persons] == [d.x for d in ZIDANE_PERSONS]
    for person in result.persons:
        assert set(person.attributes) == set(tm.CLOTHING_GROUPS)
        for group, chosen in person.attributes.items():
            assert chosen.label in tm.CLOTHING_GROUPS[group]
            # CLIP: a softmax over the group, so the best choice has at least its fair share.
            assert 1 / len(tm.CLOTHING_GROUPS[group]) <= chosen.score <= 1.0
    assert len(result.context_lines()) == len(result.persons)
    assert result.context_lines()[0].startswith("Clothing: ")
    assert model.infer(Frame(photo("zidane"))).persons == ()


def test_clothing_groups_option_and_siglip_from_the_config(models_dir: Path) -> None:
    groups = {"colour": ["a red top", "a blue top"]}
    model = _load(tm.ClothingClip, models_dir, "siglip", groups=groups)
    assert model.siglip
    result = model.infer(_zidane())
    for person in result.persons:
        assert list(person.attributes) == ["colour"]
        assert person.attributes["colour"].label in groups["colour"]
        assert 0.0 < person.attributes["colour"].score < 1.0  # SigLIP: a sigmoid per label


def test_clip_embeddings_of_the_frame_and_its_detections_are_unit_vectors(
    models_dir: Path,
) -> None:
    model = _load(tm.ClipEmbedder, models_dir, "clip", texts=["a dog", "two men"])
    frame = _zidane()
    result = model.infer(frame)
    height, width = frame.pixels.shape[:2]
    assert result.dimension == tiny.CLIP_DIMENSION
    assert result.embeddings[0].bbox.as_json() == {
        "x": 0, "y": 0, "width": width, "height": height,
    }  # fmt: skip
    assert len(result.embeddings) == 1 + len(ZIDANE_PERSONS)
    vectors = np.stack([e.vector for e in result.embeddings])
    assert vectors.shape == (3, tiny.CLIP_DIMENSION) and _unit_rows(vectors)
    texts = model.embed_texts(["a dog", "two men"])
    assert _unit_rows(texts)
    assert [m.label for m in result.matches] == ["a dog", "two men"]
    for match, text in zip(result.matches, texts, strict=True):
        assert match.score == pytest.approx(float(vectors[0] @ text), abs=1e-5)
    assert "vector" not in json.dumps(result.as_json())
    full = result.as_full_json()
    assert len(full["embeddings"][0]["vector"]) == tiny.CLIP_DIMENSION
    same_answers(model, [frame, Frame(photo("bus"))], repeats=2)


# --- X-CLIP -------------------------------------------------------------------------------------


def test_clip_frames_spread_over_history_and_end_on_the_current_frame() -> None:
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(10)]
    picked = tm.clip_frames(frames[:-1], frames[-1], 4)
    assert [int(f[0, 0, 0]) for f in picked] == [0, 3, 6, 9]
    short = tm.clip_frames([frames[0]], frames[1], 4)
    assert [int(f[0, 0, 0]) for f in short] == [0, 0, 1, 1]


def test_actions_are_a_distribution_over_the_labels(models_dir: Path) -> None:
    labels = ["walking", "climbing a fence", "fighting"]
    model = _load(tm.ActionRecognizer, models_dir, "xclip", labels=labels)
    assert model.num_frames == XCLIP_FRAMES
    bus = photo("bus")
    history = (photo("zidane"), np.ascontiguousarray(bus[:, ::-1]))  # other sizes are fine
    result = model.infer(Frame(bus, history=history))
    assert result.frames == 3
    assert sorted(a.label for a in result.actions) == sorted(labels)
    scores = [a.score for a in result.actions]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-4)
    assert result.top == result.actions[0]
    assert len(result.as_json()["actions"]) == 3
    assert model.infer(Frame(bus)).frames == 1


def test_only_likely_actions_reach_the_language_model() -> None:
    result = tm.ActionResult(
        (tm.Score("climbing a fence", 0.62), tm.Score("walking", 0.3)), frames=8
    )
    assert result.context_lines() == ["Action: climbing a fence (62%)"]


# --- Florence-2 ---------------------------------------------------------------------------------


def test_florence_captions_the_largest_person_crops(models_dir: Path) -> None:
    model = _load(tm.FlorenceAttributes, models_dir, "florence", max_new_tokens=6, max_persons=1)
    result = model.infer(_zidane())
    (person,) = result.persons  # max_persons bounds the generation work
    assert person.bbox.x == ZIDANE_PERSONS[0].x  # the larger box
    assert isinstance(person.caption, str)
    assert person.caption == " ".join(person.caption.split())
    assert result.context_lines() == (
        [f"Person appearance: {person.caption}"] if person.caption else []
    )


def test_florence_refuses_a_task_that_is_not_a_caption(models_dir: Path) -> None:
    with pytest.raises(ValueError, match="<OD>"):
        tm.FlorenceAttributes(
            LoadContext(models_dir, "cpu", {"folder": "florence", "task": "<OD>"})
        )


# --- classifiers --------------------------------------------------------------------------------


def test_violence_labels_come_from_the_config(models_dir: Path) -> None:
    model = _load(tm.ViolenceClassifier, models_dir, "violence")
    assert model.labels == ("NonViolence", "Violence")
    result = model.infer(Frame(photo("bus")))
    assert {s.label for s in result.scores} == {"NonViolence", "Violence"}
    assert sum(s.score for s in result.scores) == pytest.approx(1.0, abs=1e-5)
    assert result.alert == (result.label == "Violence")
    body = result.as_json()
    assert body["violent"] is result.alert and body["label"] == result.label


@pytest.mark.parametrize(
    ("label", "violent"),
    [("Violence", True), ("violent", True), ("fight", True), ("NonViolence", False),
     ("non_violence", False), ("no fight", False), ("normal", False)],
)  # fmt: skip
def test_which_labels_are_violent(models_dir: Path, label: str, violent: bool) -> None:
    assert tm.ViolenceClassifier.is_alert(None, label) is violent  # type: ignore[arg-type]


def test_violence_and_weather_context_lines() -> None:
    violent = tm.ClassifierResult((tm.Score("Violence", 0.87),), True, "violence")
    calm = tm.ClassifierResult((tm.Score("NonViolence", 0.9),), False, "violence")
    fog = tm.ClassifierResult((tm.Score("fog", 0.81),), True, "weather")
    assert violent.context_lines() == ["[WARNING] VIOLENCE DETECTED: Violence (confidence=87%)"]
    assert calm.context_lines() == []
    assert fog.context_lines() == ["Weather: fog (81%)"]
    assert fog.as_json()["adverse"] is True


def test_weather_is_one_of_the_configs_labels(models_dir: Path) -> None:
    model = _load(tm.WeatherClassifier, models_dir, "weather")
    result = model.infer(Frame(photo("astronaut")))
    assert model.labels == WEATHER
    assert result.label in WEATHER and len(result.scores) == 5
    assert result.alert == (result.label != "clear")
    assert result.context_lines() == [
        f"Weather: {result.label} ({round(result.confidence * 100)}%)"
    ]


# --- SegFormer ----------------------------------------------------------------------------------


def test_clothes_fractions_per_person_leave_out_the_body(models_dir: Path) -> None:
    model = _load(tm.ClothesSegmenter, models_dir, "clothes")
    frame = Frame(photo("zidane"), (*ZIDANE_PERSONS, Detection("car", 0.9, 0, 0, 50, 50)))
    result = model.infer(frame)
    assert len(result.persons) == len(ZIDANE_PERSONS)  # the car is not segmented
    for person in result.persons:
        labels = [c.label for c in person.clothes]
        assert set(labels) <= set(tiny.CLOTHES_LABELS)
        assert not {label.lower() for label in labels} & tm.NOT_CLOTHES
        fractions = [c.score for c in person.clothes]
        assert fractions == sorted(fractions, reverse=True)
        assert all(tm.ClothesSegmenter.MIN_FRACTION <= f <= 1 for f in fractions)
        assert sum(fractions) <= 1.0 + 1e-6
    json.dumps(result.as_json())
    same_answers(model, [frame], repeats=2)


# --- through the add-on -------------------------------------------------------------------------


async def test_depth_estimate_endpoint_serves_a_supplied_depth_anything(
    aiohttp_client: Any, make_settings: Any, counting_detector: Any, tmp_path: Path, bus_jpg: bytes
) -> None:
    """/v1/depth-estimate answered 409 while the family had no loader; with a checkpoint folder
    in the models dir the zoo loads it and answers the depth map."""
    tiny.depth_anything(tmp_path / tm.DepthEstimator.default_folder)
    settings = make_settings({"detector": {"warmup": False}, "reid": {"models_dir": str(tmp_path)}})
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    models = {m["name"]: m for m in (await (await client.get("/v1/models")).json())["models"]}
    assert models["depth_estimator"]["state"] == "unloaded"  # installed, not loaded yet
    assert models["vitpose"]["state"] == "not_installed"
    response = await client.post("/v1/depth-estimate", data=bus_jpg, headers=JPEG)
    assert response.status == 200, await response.text()
    body = json.dumps(await response.json())
    assert '"png_base64"' in body and '"mean"' in body
    absent = await client.post("/v1/models/vitpose/load")
    assert absent.status == 409
    assert str(tmp_path / tm.VitPose.default_folder) in (await absent.json())["error"]["message"]
