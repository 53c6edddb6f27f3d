"""The user-supplied Ultralytics families on tiny random models the tests build.

No registry ships weapon, vehicle-mask, damage or YOLO-World weights, so each model here is an
untrained YOLOv8n built from Ultralytics' yaml with the classes such a model would have, saved
as a ``.pt`` and loaded through the family's loader. Its output is real inference of meaningless
weights: the tests run at ``min_confidence`` 0 (untrained scores are ~1e-4) and assert shapes,
types, ranges, class filtering and the not_installed path, never what was found.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from addon_server.errors import ModelNotInstalledError
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models import ultralytics_models as um
from addon_server.zoo.models.boxes import Box
from addon_server.zoo.registry import SPECS, VEHICLES
from tests.addon_server.zoo.real_photos import load_with_figures, photo, same_answers

FAMILIES = {
    "threat_yolo": um.ThreatYolo,
    "vehicle_segment": um.VehicleSegmenter,
    "vehicle_damage": um.VehicleDamage,
    "yolo_world": um.OpenVocabularyDetector,
}
THREAT_NAMES = {0: "pistol", 1: "person", 2: "knife"}
"""The untrained head favours class 0 (seeded): the pistol boxes are what the tests filter."""
WORLD_PROMPTS = {0: "person", 1: "package", 2: "ladder"}


def _build(folder: Path, yaml: str, names: dict[int, str], file: str) -> None:
    """An untrained model with ``names`` as its classes, saved as ``folder/file``."""
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)  # the same untrained weights every run
    model = YOLO(yaml)
    if "world" in yaml:
        # What set_classes leaves behind, without CLIP: per-class text embeddings, here random.
        width = model.model.txt_feats.shape[-1]
        model.model.txt_feats = torch.randn(1, len(names), width)
        model.model.model[-1].nc = len(names)
    elif len(names) != len(model.names):
        model.model = type(model.model)(yaml, nc=len(names), verbose=False)
    model.model.names = dict(names)
    model.save(str(folder / file))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import yaml
    from ultralytics.utils import ROOT

    coco = yaml.safe_load((ROOT / "cfg/datasets/coco.yaml").read_text())["names"]
    folder = tmp_path_factory.mktemp("ultralytics-zoo")
    _build(folder, "yolov8n.yaml", THREAT_NAMES, um.THREAT_FILE)
    # COCO's names with car and person swapped: the untrained head favours class 0 everywhere.
    seg_names = {**coco, 0: "car", 2: "person"}
    _build(folder, "yolov8n-seg.yaml", seg_names, um.VEHICLE_SEGMENT_FILE)
    _build(folder, "yolov8n.yaml", {0: "dent", 1: "scratch"}, um.VEHICLE_DAMAGE_FILE)
    _build(folder, "yolov8n-worldv2.yaml", WORLD_PROMPTS, um.YOLO_WORLD_FILE)
    return folder


def _context(models_dir: Path, **options: object) -> LoadContext:
    return LoadContext(models_dir, "cpu", {"min_confidence": 0.0, "image_size": 320, **options})


@pytest.fixture(scope="module")
def threat(models_dir: Path) -> um.ThreatYolo:
    return load_with_figures(um.ThreatYolo, _context(models_dir))


@pytest.fixture(scope="module")
def segmenter(models_dir: Path) -> um.VehicleSegmenter:
    return load_with_figures(um.VehicleSegmenter, _context(models_dir))


def _inside(box: Box, frame: Frame) -> bool:
    height, width = frame.pixels.shape[:2]
    return bool(
        box.x >= 0 and box.y >= 0 and box.x + box.width <= width and box.y + box.height <= height
    )


def test_registry_rows_name_these_loaders_and_files() -> None:
    rows = {s.name: s for s in SPECS if s.name in FAMILIES}
    assert set(rows) == set(FAMILIES)
    for name, cls in FAMILIES.items():
        assert rows[name].resolve_loader() is cls  # type: ignore[comparison-overlap]
        assert rows[name].files == (cls.default_file,)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_missing_file_is_not_installed_naming_the_path(tmp_path: Path, name: str) -> None:
    cls = FAMILIES[name]
    with pytest.raises(ModelNotInstalledError, match=str(tmp_path / cls.default_file)):
        cls(LoadContext(tmp_path, "cpu"))
    with pytest.raises(ModelNotInstalledError, match=str(tmp_path / "mine.pt")):
        cls(LoadContext(tmp_path, "cpu", {"file": "mine.pt"}))


def test_threat_model_reports_only_weapon_classes_as_yolo_threats(threat: um.ThreatYolo) -> None:
    frame = Frame(photo("bus"))
    result = threat.infer(frame)
    assert threat.threat_classes == {"pistol", "knife"}  # "person" is not a threat
    raw = threat.detect(frame.pixels)
    weapons = [(n, s) for n, s in zip(raw.names, raw.scores, strict=True) if n != "person"]
    assert weapons, "an untrained model at confidence 0 still boxes something"
    assert sorted((t.class_name, t.confidence) for t in result.threats) == sorted(weapons)
    assert all(t.source == "yolo" and 0.0 <= t.confidence <= 1.0 for t in result.threats)
    assert all(_inside(t.bbox, frame) for t in result.threats)
    confidences = [t.confidence for t in result.threats]
    assert confidences == sorted(confidences, reverse=True)
    assert result.max_confidence == confidences[0]
    body = json.loads(json.dumps(result.as_json()))
    assert body["threats"][0]["source"] == "yolo"
    assert len(result.context_lines()) == len(result.threats)
    assert result.context_lines()[0].endswith(
        f"DETECTED: confidence={round(confidences[0] * 100)}%"
    )


def test_threat_classes_option_narrows_what_counts(models_dir: Path) -> None:
    model = um.ThreatYolo(_context(models_dir, classes=["knife", "person"]))
    try:
        frame = Frame(photo("zidane"))
        raw = model.detect(frame.pixels)
        assert "pistol" in raw.names  # what the default would report, and the option drops
        result = model.infer(frame)
        kept = [(n, s) for n, s in zip(raw.names, raw.scores, strict=True) if n != "pistol"]
        assert sorted((t.class_name, t.confidence) for t in result.threats) == sorted(kept)
    finally:
        model.close()


def test_nothing_above_the_threshold_is_an_empty_result(models_dir: Path) -> None:
    model = um.ThreatYolo(_context(models_dir, min_confidence=0.99))
    result = model.infer(Frame(photo("bus")))
    assert result.threats == ()
    assert result.max_confidence == 0.0
    assert result.context_lines() == []


def test_vehicle_masks_are_vehicle_classes_with_areas_in_frame_pixels(
    segmenter: um.VehicleSegmenter,
) -> None:
    frame = Frame(photo("bus"))
    height, width = frame.pixels.shape[:2]
    result = segmenter.infer(frame)
    assert result.vehicles
    assert {v.class_name for v in result.vehicles} <= VEHICLES
    for v in result.vehicles:
        assert _inside(v.bbox, frame)
        # Ultralytics crops each mask to its box, so the area cannot exceed it (±1 px rounding).
        assert 0 <= v.area_px <= (v.bbox.width + 2) * (v.bbox.height + 2)
        assert v.area_fraction == pytest.approx(v.area_px / (height * width))
    areas = [v.area_px for v in result.vehicles]
    assert areas == sorted(areas, reverse=True)
    body = json.loads(json.dumps(result.as_json()))
    assert set(body["vehicles"][0]) == {"class", "confidence", "bbox", "area_px", "area_fraction"}
    assert result.context_lines()[0].startswith("Vehicle: ")


def test_vehicle_classes_option_follows_the_models_own_labels(models_dir: Path) -> None:
    model = um.VehicleSegmenter(_context(models_dir, classes=["person", "truck"]))
    try:
        frame = Frame(photo("zidane"))
        assert "car" in model.detect(frame.pixels).names
        result = model.infer(frame)
        assert {v.class_name for v in result.vehicles} <= {"person", "truck"}
    finally:
        model.close()


def test_damage_boxes_carry_the_models_classes(models_dir: Path) -> None:
    model = um.VehicleDamage(_context(models_dir))
    frame = Frame(photo("bus"))
    result = model.infer(frame)
    assert result.damages
    assert {d.kind for d in result.damages} <= {"dent", "scratch"}
    assert all(_inside(d.bbox, frame) for d in result.damages)
    assert result.as_json()["damage_detected"] is True
    assert result.context_lines()[0].startswith("Vehicle damage: ")


def test_yolo_world_runs_offline_on_the_vocabulary_saved_in_the_file(models_dir: Path) -> None:
    model = load_with_figures(um.OpenVocabularyDetector, _context(models_dir))
    frame = Frame(photo("zidane"))
    result = model.infer(frame)
    assert result.prompts == ("person", "package", "ladder")
    assert result.objects
    assert {o.label for o in result.objects} <= set(WORLD_PROMPTS.values())
    assert all(_inside(o.bbox, frame) for o in result.objects)
    assert result.as_json()["prompts"] == ["person", "package", "ladder"]
    same = um.OpenVocabularyDetector(_context(models_dir, prompts=["person", "package", "ladder"]))
    assert same.prompts == result.prompts


def test_yolo_world_with_new_prompts_and_no_clip_is_not_installed(models_dir: Path) -> None:
    """New prompts need CLIP ViT-B/32 (not in this venv): reported, never the old vocabulary."""
    if um.clip_weights().is_file():
        pytest.skip(f"CLIP weights present at {um.clip_weights()}")
    with pytest.raises(ModelNotInstalledError, match="CLIP ViT-B/32") as caught:
        um.OpenVocabularyDetector(_context(models_dir, prompts=["bicycle", "ladder"]))
    assert str(um.clip_weights()) in str(caught.value)


def test_concurrent_calls_give_the_same_answers(
    threat: um.ThreatYolo, segmenter: um.VehicleSegmenter
) -> None:
    frames = [Frame(photo("bus")), Frame(photo("zidane"))]
    assert same_answers(threat, frames) == [threat.infer(f).as_json() for f in frames]
    same_answers(segmenter, frames, repeats=2)


def test_warmup_then_close_drops_the_model(models_dir: Path) -> None:
    model = um.VehicleDamage(_context(models_dir))
    model.warmup()
    model.close()
    with pytest.raises(RuntimeError, match="closed"):
        model.infer(Frame(photo("bus")))
