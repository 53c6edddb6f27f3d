"""Pets, vehicle types, weapons and body appearance on real photos (EfficientNet-Lite0,
MobileNetV2), and OSNet's loader on a tiny network built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from addon_server.detector.base import Detection
from addon_server.errors import ModelNotInstalledError
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.appearance import AppearanceEmbedder, OsnetEmbedder
from addon_server.zoo.models.imagenet import PetClassifier, VehicleClassifier
from addon_server.zoo.models.threat import ThreatDetector, hand_regions
from tests.addon_server.conftest import SHARED_MODELS, needs_shared_models
from tests.addon_server.zoo.real_photos import (
    BUS_PERSONS,
    ZIDANE_PERSONS,
    load_with_figures,
    photo,
    same_answers,
)

pytestmark = needs_shared_models("efficientnet-lite0.onnx", "mobilenetv2-appearance.onnx")
CONTEXT = LoadContext(SHARED_MODELS, "cpu")
BUS = Detection("bus", 0.66, 0, 235, 808, 501)
"""The embedded detector's bus in bus.jpg."""


def whole(name: str, cls: str) -> Frame:
    pixels = photo(name)
    height, width = pixels.shape[:2]
    return Frame(pixels, (Detection(cls, 0.9, 0, 0, width, height),))


@pytest.fixture(scope="module")
def pets() -> PetClassifier:
    return load_with_figures(PetClassifier, CONTEXT)


@pytest.fixture(scope="module")
def threat() -> ThreatDetector:
    return load_with_figures(ThreatDetector, CONTEXT)


@pytest.fixture(scope="module")
def appearance() -> AppearanceEmbedder:
    return load_with_figures(AppearanceEmbedder, CONTEXT)


def test_the_cat_photo_is_a_household_cat(pets: PetClassifier) -> None:
    (pet,) = pets.infer(whole("chelsea", "cat")).pets
    assert pet.species == "cat" and pet.is_household_pet
    assert pet.confidence > 0.5
    assert "cat" in pet.label.lower()
    assert pets.infer(Frame(photo("chelsea"))).pets == ()  # no animal detected, nothing run


@pytest.mark.parametrize("detected", ["horse", "bird", "cow"])
def test_an_animal_imagenet_does_not_see_as_a_pet_is_not_called_one(
    pets: PetClassifier, detected: str
) -> None:
    """A detector's horse on a photo with no cat or dog in it (a coffee cup): ImageNet's cat
    and dog groups hold about 1 %, which never makes a household dog."""
    assert pets.infer(whole("coffee", detected)).pets == ()
    (unsure,) = pets.infer(whole("coffee", "dog")).pets  # the detector's own dog still counts
    assert (unsure.species, unsure.label, unsure.is_household_pet) == ("dog", "unsure", True)
    assert unsure.confidence < 0.3


def test_the_bus_is_a_bus(pets: PetClassifier) -> None:
    model = load_with_figures(VehicleClassifier, CONTEXT)
    result = model.infer(Frame(photo("bus"), (BUS, *BUS_PERSONS)))
    (vehicle,) = result.vehicles  # persons are not vehicles
    assert vehicle.vehicle_type == "bus"
    assert "Vehicle: bus" in result.context_lines()[0]


def test_the_motorcycle_photo_is_a_motorcycle() -> None:
    """scikit-image's stereo motorcycle (a real photo of a parked motorbike)."""
    from skimage import data

    pixels = np.ascontiguousarray(data.stereo_motorcycle()[0][:, :, ::-1])
    model = load_with_figures(VehicleClassifier, CONTEXT)
    found = Frame(pixels, (Detection("motorcycle", 0.9, 40, 60, 700, 420),))
    (vehicle,) = model.infer(found).vehicles
    assert vehicle.vehicle_type == "motorcycle"
    assert vehicle.confidence > 0.5
    same_answers(model, [found])


def test_a_detected_knife_is_a_threat_and_people_alone_are_not(threat: ThreatDetector) -> None:
    calm = [
        Frame(photo("zidane"), ZIDANE_PERSONS),
        Frame(photo("bus"), BUS_PERSONS),
        whole("astronaut", "person"),
    ]
    for frame in calm:
        assert threat.infer(frame).threats == ()
    knife = Detection("knife", 0.8, 900, 400, 60, 120)
    result = threat.infer(Frame(photo("zidane"), (*ZIDANE_PERSONS, knife)))
    (found,) = result.threats
    assert (found.class_name, found.source) == ("knife", "detector")
    assert result.max_confidence == pytest.approx(0.8)
    assert result.context_lines() == ["[CRITICAL] KNIFE DETECTED: confidence=80%"]
    same_answers(threat, calm)


def test_hand_regions_cover_both_sides_of_the_body() -> None:
    left, right = hand_regions(Detection("person", 0.9, 100, 100, 120, 300))
    assert left.x < 100 + 60 < right.x + right.width
    assert left.y == right.y == 160


def test_the_same_person_is_closer_than_another(appearance: AppearanceEmbedder) -> None:
    zidane = photo("zidane")
    him = ZIDANE_PERSONS[0]
    moved = Detection("person", 0.9, him.x + 12, him.y + 8, him.width - 20, him.height - 10)
    brighter = np.clip(zidane.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    a = appearance.infer(Frame(zidane, (him,))).embeddings[0].vector
    b = appearance.infer(Frame(brighter, (moved,))).embeddings[0].vector
    others = appearance.infer(Frame(photo("bus"), BUS_PERSONS)).embeddings
    assert a.shape == (1280,)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-4)
    same = float(a @ b)
    assert all(same > float(a @ o.vector) for o in others)
    full = appearance.infer(Frame(zidane, ZIDANE_PERSONS)).as_full_json()
    assert len(full["embeddings"]) == 2 and len(full["embeddings"][0]["vector"]) == 1280


def test_crops_in_batches_of_any_size_give_the_same_rows(appearance: AppearanceEmbedder) -> None:
    """The CPU default runs one crop at a time (memory); a GPU's batches, or a batch that does
    not divide the crops, give each person the same vector in the same order."""
    frame = Frame(photo("bus"), BUS_PERSONS)
    one = appearance.infer(frame).embeddings
    for size in (3, 8):
        model = AppearanceEmbedder(LoadContext(SHARED_MODELS, "cpu", {"crop_batch": size}))
        batched = model.infer(frame).embeddings
        assert [e.bbox for e in batched] == [e.bbox for e in one]
        for a, b in zip(one, batched, strict=True):
            np.testing.assert_allclose(a.vector, b.vector, atol=1e-4)
        model.close()


class TinyOsnet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)
        self.head = torch.nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


def test_osnet_loads_a_user_network_and_reports_a_missing_one(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalledError, match=str(tmp_path / "osnet-x0.25.onnx")):
        OsnetEmbedder(LoadContext(tmp_path, "cpu"))
    torch.onnx.export(
        TinyOsnet().eval(),
        (torch.zeros(1, 3, 256, 128),),
        str(tmp_path / "osnet-x0.25.onnx"),
        input_names=["input"],
        output_names=["features"],
        dynamic_axes={"input": {0: "n"}, "features": {0: "n"}},
        dynamo=False,
    )
    model = OsnetEmbedder(LoadContext(tmp_path, "cpu"))
    result = model.infer(Frame(photo("zidane"), ZIDANE_PERSONS))
    assert result.dimension == 16 and len(result.embeddings) == 2
    assert all(np.linalg.norm(e.vector) == pytest.approx(1.0, abs=1e-4) for e in result.embeddings)
