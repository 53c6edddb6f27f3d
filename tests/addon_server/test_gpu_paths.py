"""GPU path optimisations of the Ultralytics detector: each switch, and its CPU fallback.

This machine has no GPU. What can be proven here is proven on real photos with a real
YOLOv8n built from ``yolov8n.yaml`` and saved to ``.pt``:

* FP16, pinned memory and CUDA streams need a CUDA device: asked for on the CPU, each leaves
  the plain path in charge, says so, and the detections are the plain path's, exactly;
* the *staged* path those two use on a GPU (Ultralytics' stages called one by one, the batch
  split into parts) runs on the CPU too, without streams: its detections are the plain path's,
  exactly, for batches of mixed and of equal image sizes;
* ``torch.compile`` runs on the CPU (inductor with the host compiler): its detections match
  the plain path's within float tolerance.

Untrained weights straight from the YAML give every box the same score (the head's inputs are
near zero), so a comparison would rest on ties. The convolution weights are therefore drawn
again from a fixed seed (Kaiming normal) and the class prior is set to 0, which spreads the
scores; the box prior and the network are YOLOv8n's.
Speed is measured by ``benchmarks/gpu_paths.py``, never here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from addon_server.config import ConfigError, GpuPathSettings, parse
from addon_server.detector import load_detector
from addon_server.detector.base import Detection
from addon_server.detector.ultralytics import UltralyticsDetector, active_paths, split
from tests.addon_server.conftest import ASSETS

IMGSZ = 320
MIN_CONFIDENCE = 0.51
"""Keeps a few dozen boxes per photo with the seeded weights (their scores top out near 0.53)."""


def seeded_yolov8n(path: Path) -> Path:
    """YOLOv8n from its YAML with seeded Kaiming-normal convolutions, saved as ``.pt``."""
    import torch
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    torch.manual_seed(0)
    for module in model.model.modules():
        # the biases (the head's box prior) stay, and so does the DFL's fixed 0..15 kernel
        if isinstance(module, torch.nn.Conv2d) and module.weight.requires_grad:
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    for branch in model.model.model[-1].cv3:  # but a class prior near 0 lets scores spread
        torch.nn.init.zeros_(branch[-1].bias)
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seeded_yolov8n(tmp_path_factory.mktemp("yolov8n") / "yolov8n-seeded.pt")


def photos() -> list[np.ndarray]:
    """Eight real photos of different sizes: bus.jpg and zidane.jpg, mirrored, cropped,
    reduced."""
    bus = cv2.imread(str(ASSETS / "bus.jpg"))
    zidane = cv2.imread(str(ASSETS / "zidane.jpg"))
    return [
        bus,
        zidane,
        cv2.flip(bus, 1),
        cv2.flip(zidane, 1),
        np.ascontiguousarray(bus[100:900, 50:750]),
        np.ascontiguousarray(zidane[:, 200:1100]),
        cv2.resize(bus, (405, 540)),
        cv2.resize(zidane, (640, 360)),
    ]


def detector(path: Path, **switches: Any) -> UltralyticsDetector:
    return UltralyticsDetector(
        str(path),
        device="cpu",
        input_size=IMGSZ,
        min_confidence=MIN_CONFIDENCE,
        gpu_path=GpuPathSettings(**switches),
    )


@pytest.fixture(scope="module")
def plain(model_pt: Path) -> list[list[Detection]]:
    """The plain path's detections of the eight photos, batched."""
    found = detector(model_pt).detect_batch(photos())
    assert all(found), "every photo has detections to compare"
    return found


@pytest.fixture(scope="module")
def plain_one(model_pt: Path) -> list[list[Detection]]:
    """The plain path's detections of zidane.jpg alone (a lone image is letterboxed to the
    stride only, so its boxes differ from the same photo's in a mixed batch)."""
    found = detector(model_pt).detect_batch(photos()[1:2])
    assert found[0]
    return found


CUDA_ONLY = [
    ({"half": True}, "half"),
    ({"pinned_memory": True}, "pinned_memory"),
    ({"cuda_streams": True, "cuda_streams_pool_size": 3}, "cuda_streams"),
    (
        {"half": True, "pinned_memory": True, "cuda_streams": True},
        "half, pinned_memory, cuda_streams",
    ),
]


@pytest.mark.parametrize(("switches", "names"), CUDA_ONLY, ids=[n for _, n in CUDA_ONLY])
def test_a_cuda_switch_on_the_cpu_falls_back_to_the_plain_path(
    model_pt: Path,
    plain: list[list[Detection]],
    plain_one: list[list[Detection]],
    switches: dict[str, Any],
    names: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("INFO", logger="addon_server.detector.ultralytics"):
        det = detector(model_pt, **switches)
    assert (det.paths.half, det.paths.pinned_memory, det.paths.cuda_streams) == (False, False, 0)
    assert not det.paths.staged
    for name in names.split(", "):
        assert f"{name} needs a CUDA device; on cpu the plain path runs" in caplog.text
    assert det.detect_batch(photos()) == plain
    assert det.detect_batch(photos()[1:2]) == plain_one


def _iou(a: Detection, b: Detection) -> float:
    ix = max(0, min(a.x + a.width, b.x + b.width) - max(a.x, b.x))
    iy = max(0, min(a.y + a.height, b.y + b.height) - max(a.y, b.y))
    inter = ix * iy
    return inter / (a.width * a.height + b.width * b.height - inter)


def assert_same_within_floats(ours: list[list[Detection]], theirs: list[list[Detection]]) -> None:
    """The same detections up to float rounding: each of ``theirs`` has a twin in ``ours``
    (same class, IoU > 0.99, score within 1e-3), allowing for a box at the very edge of the
    score floor to tip either way."""
    assert len(ours) == len(theirs)
    for mine, other in zip(ours, theirs, strict=True):
        matched = sum(
            any(
                c.class_name == p.class_name
                and _iou(c, p) > 0.99
                and abs(c.confidence - p.confidence) < 1e-3
                for c in mine
            )
            for p in other
        )
        assert matched >= 0.95 * len(other), (matched, len(other))
        assert abs(len(mine) - len(other)) <= max(1, len(other) // 20)


@pytest.mark.parametrize("streams", [0, 1, 3, 8])
@pytest.mark.parametrize("pinned", [False, True], ids=["pageable", "pinned-asked"])
def test_the_staged_path_gives_the_plain_paths_detections(
    model_pt: Path,
    plain: list[list[Detection]],
    plain_one: list[list[Detection]],
    streams: int,
    pinned: bool,
) -> None:
    """The stages the GPU optimisations run, called one by one on the CPU (parts in turn,
    no streams; page-locked memory is asked for only where CUDA can give it). A batch run
    whole gives the plain path's detections exactly; run in smaller parts, the convolution
    library may sum in another order (batch size picks its kernels), so up to float rounding.
    """
    det = detector(model_pt)
    staged = det._predict_staged(photos(), streams=streams, pinned=pinned)
    if streams <= 1:
        assert staged == plain
    else:
        assert_same_within_floats(staged, plain)
    assert det._predict_staged(photos()[1:2], streams=streams, pinned=pinned) == plain_one


def test_the_staged_path_with_equal_sizes_letterboxes_as_the_plain_path(model_pt: Path) -> None:
    """Equal shapes make Ultralytics pad only to the stride (``auto``): the staged path too."""
    det = detector(model_pt)
    same = [cv2.imread(str(ASSETS / "bus.jpg"))] * 2 + [
        cv2.flip(cv2.imread(str(ASSETS / "bus.jpg")), 1)
    ] * 2
    expected = det.detect_batch(same)
    assert all(expected)
    assert det._predict_staged(same, streams=1, pinned=False) == expected
    assert_same_within_floats(det._predict_staged(same, streams=2, pinned=False), expected)


def test_torch_compile_runs_on_the_cpu_with_the_plain_paths_detections(
    model_pt: Path, plain: list[list[Detection]]
) -> None:
    """The compiled graph computes the same network, its floats may differ in the last bits."""
    det = detector(model_pt, compile="default")
    assert det.paths.compile == "default"
    assert det.paths.fallbacks == ()
    assert_same_within_floats(det.detect_batch(photos()), plain)


def test_an_exported_model_keeps_its_export_and_says_so() -> None:
    asked = GpuPathSettings(
        half=True, pinned_memory=True, cuda_streams=True, compile="reduce-overhead"
    )
    paths = active_paths(asked, "cuda:0", exported=True)
    assert (paths.half, paths.pinned_memory, paths.cuda_streams, paths.compile) == (
        False,
        False,
        0,
        "off",
    )
    assert len(paths.fallbacks) == 4
    assert all("applies to .pt models" in reason for reason in paths.fallbacks)


def test_on_a_cuda_device_every_switch_applies() -> None:
    """What a GPU host gets (the decision only: no GPU runs here)."""
    asked = GpuPathSettings(
        half=True,
        pinned_memory=True,
        cuda_streams=True,
        cuda_streams_pool_size=4,
        compile="default",
    )
    paths = active_paths(asked, "cuda:1", exported=False)
    assert paths == type(paths)(
        half=True, pinned_memory=True, cuda_streams=4, compile="default", fallbacks=()
    )
    assert paths.staged


def test_split_keeps_order_and_sizes() -> None:
    items = [np.full((1, 1, 3), i, dtype=np.uint8) for i in range(8)]
    for parts, sizes in ((1, [8]), (3, [3, 3, 2]), (8, [1] * 8), (20, [1] * 8)):
        runs = split(items, parts)
        assert [len(r) for r in runs] == sizes
        assert [int(x[0, 0, 0]) for r in runs for x in r] == list(range(8))


def test_the_switches_come_from_the_config_and_the_seeds_env_names(model_pt: Path) -> None:
    settings = parse(
        {"detector": {"backend": "ultralytics", "model_path": str(model_pt)}},
        environ={
            "CUDA_STREAMS_ENABLED": "true",
            "CUDA_STREAMS_POOL_SIZE": "4",
            "PINNED_MEMORY": "1",
            "DETECTOR_HALF": "yes",
            "TORCH_COMPILE": "reduce-overhead",
        },
    )
    assert settings.detector.gpu_path == GpuPathSettings(
        half=True,
        pinned_memory=True,
        cuda_streams=True,
        cuda_streams_pool_size=4,
        compile="reduce-overhead",
    )
    loaded = load_detector(settings.detector, "cpu")
    assert isinstance(loaded, UltralyticsDetector)
    assert len(loaded.paths.fallbacks) == 3  # compile applies on the CPU too
    assert parse({}, environ={}).detector.gpu_path == GpuPathSettings()
    for raw, mode in ((True, "default"), ("off", "off"), ("max-autotune-no-cudagraphs", None)):
        doc = {"detector": {"gpu_path": {"compile": raw}}}
        got = parse(doc, environ={}).detector.gpu_path.compile
        assert got == (mode or raw)


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"cuda_streams_pool_size": 0}, "detector.gpu_path.cuda_streams_pool_size"),
        ({"compile": "fastest"}, "detector.gpu_path.compile"),
        ({"half": "maybe"}, "detector.gpu_path.half"),
        ({"streams": True}, "detector.gpu_path.streams"),
    ],
)
def test_a_bad_switch_is_refused_naming_the_key(document: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse({"detector": {"gpu_path": document}}, environ={})
