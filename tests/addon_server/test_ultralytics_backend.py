"""The ultralytics backend serves a model built from yolo11n.yaml, as .pt and exported .onnx.

The weights are untrained (no hub downloads here), so the assertions are about well-formed,
consistent output: boxes inside the image, known class names, per-request filters honoured.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from addon_server.app import create_app

JPEG = {"Content-Type": "image/jpeg"}


@pytest.fixture(scope="module")
def yolo11n_files(tmp_path_factory) -> dict[str, Path]:
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("yolo11n")
    pt = folder / "yolo11n-untrained.pt"
    import yaml
    from ultralytics.utils import ROOT

    model = YOLO("yolo11n.yaml")
    # A model trained on COCO carries these names; an untrained build has "0".."79".
    coco = yaml.safe_load((ROOT / "cfg/datasets/coco.yaml").read_text())["names"]
    model.model.names = dict(coco)
    model.save(str(pt))
    exported = {}
    for kind, dynamic in (("onnx", True), ("static", False)):
        path = YOLO(str(pt)).export(format="onnx", imgsz=320, dynamic=dynamic, simplify=False)
        exported[kind] = Path(path).rename(folder / f"yolo11n-{kind}.onnx")
    return {"pt": pt, **exported}


@pytest.mark.parametrize("kind", ["pt", "onnx", "static"])
async def test_serves_yolo11n(
    aiohttp_client, make_settings, yolo11n_files, bus_jpg, zidane_jpg, kind
) -> None:
    settings = make_settings(
        {
            "detector": {
                "model_path": str(yolo11n_files[kind]),
                "input_size": 320,
                "min_confidence": 0.001,
                "warmup": False,
            },
            "batching": {"max_queue_delay_us": 200_000},
        }
    )
    client = await aiohttp_client(create_app(settings))
    health = await (await client.get("/health")).json()
    assert health["models"][0]["backend"] == "ultralytics"
    assert health["models"][0]["loaded"] is True
    names = ",".join(["person", "car", "bus", "dog", "tie", "dining table"])
    params = {"confidence": "0.001", "classes": names}
    responses = await asyncio.gather(
        client.post("/v1/detect", params=params, data=bus_jpg, headers=JPEG),
        client.post("/v1/detect", params=params, data=zidane_jpg, headers=JPEG),
    )
    sizes = [(810, 1080), (1280, 720)]
    for resp, (width, height) in zip(responses, sizes, strict=True):
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["image"] == {"width": width, "height": height}
        assert body["model"] == yolo11n_files[kind].stem
        for det in body["detections"]:
            assert det["class"] in names.split(",")
            assert 0.001 <= det["confidence"] <= 1
            box = det["bbox"]
            assert box["x"] >= 0 and box["x"] + box["width"] <= width
            assert box["y"] >= 0 and box["y"] + box["height"] <= height
            assert box["width"] > 0 and box["height"] > 0
    # unknown class names are checked against the model's own vocabulary
    resp = await client.post(
        "/v1/detect", params={"classes": "unicorn"}, data=bus_jpg, headers=JPEG
    )
    assert resp.status == 400


def test_untrained_model_gives_boxes_at_low_threshold(yolo11n_files, bus_jpg) -> None:
    """Guard for the test above: at a low floor the untrained net does emit boxes."""
    from addon_server.detector.ultralytics import UltralyticsDetector
    from addon_server.imaging import decode

    detector = UltralyticsDetector(
        str(yolo11n_files["pt"]), device="cpu", input_size=320, min_confidence=0.0001
    )
    image = decode(bus_jpg, max_pixels=10**8).pixels
    results = detector.detect_batch([image, image])
    assert len(results) == 2
    assert len(results[0]) > 0
    assert [d.class_name for d in results[0]] == [d.class_name for d in results[1]]
    assert detector.class_names[0] == "person" and len(detector.class_names) == 80
