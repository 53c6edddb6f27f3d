"""/v1/detect on the real server with the real embedded yolov3-tiny weights and real photos."""

from __future__ import annotations

import aiohttp
import pytest

from addon_server.app import create_app
from addon_server.config import SECURITY_CLASSES
from tests.addon_server.conftest import CountingDetector, persons


@pytest.fixture
async def client(aiohttp_client, make_settings, counting_detector: CountingDetector):
    settings = make_settings({"detector": {"warmup": False}})
    return await aiohttp_client(create_app(settings, detector=counting_detector))


async def test_bus_has_at_least_three_persons(client, bus_jpg: bytes) -> None:
    resp = await client.post("/v1/detect", data=bus_jpg, headers={"Content-Type": "image/jpeg"})
    assert resp.status == 200
    body = await resp.json()
    assert persons(body) >= 3
    assert any(d["class"] == "bus" for d in body["detections"])  # needs an anti-aliased resize
    assert body["image"] == {"width": 810, "height": 1080}
    assert body["model"] == "yolov3-tiny-coco"
    assert body["inference_time_ms"] > 0
    for det in body["detections"]:
        assert det["class"] in SECURITY_CLASSES
        assert 0.5 <= det["confidence"] <= 1.0
        box = det["bbox"]
        assert box["width"] > 0 and box["height"] > 0
        assert box["x"] + box["width"] <= 810 and box["y"] + box["height"] <= 1080


async def test_zidane_has_two_persons_via_multipart(client, zidane_jpg: bytes) -> None:
    form = aiohttp.FormData()
    form.add_field("image", zidane_jpg, filename="zidane.jpg", content_type="image/jpeg")
    resp = await client.post("/v1/detect", data=form)
    assert resp.status == 200
    body = await resp.json()
    assert persons(body) == 2
    assert body["image"] == {"width": 1280, "height": 720}


async def test_coffee_has_no_person(client, coffee_jpg: bytes) -> None:
    resp = await client.post("/v1/detect", data=coffee_jpg, headers={"Content-Type": "image/jpeg"})
    assert resp.status == 200
    assert persons(await resp.json()) == 0


async def test_png_and_webp_uploads_are_decoded(client, zidane_jpg: bytes) -> None:
    import io

    from PIL import Image

    source = Image.open(io.BytesIO(zidane_jpg))
    for fmt, content_type in (("PNG", "image/png"), ("WEBP", "image/webp")):
        buffer = io.BytesIO()
        source.save(buffer, format=fmt)
        resp = await client.post(
            "/v1/detect", data=buffer.getvalue(), headers={"Content-Type": content_type}
        )
        assert resp.status == 200, fmt
        body = await resp.json()
        assert body["image"] == {"width": 1280, "height": 720}
        assert persons(body) == 2, fmt


async def test_classes_and_confidence_options(client, zidane_jpg: bytes) -> None:
    headers = {"Content-Type": "image/jpeg"}
    default = await (await client.post("/v1/detect", data=zidane_jpg, headers=headers)).json()
    assert {d["class"] for d in default["detections"]} == {"person"}  # tie is not a security class
    wide = await (
        await client.post(
            "/v1/detect?classes=person,tie&confidence=0.2", data=zidane_jpg, headers=headers
        )
    ).json()
    classes = {d["class"] for d in wide["detections"]}
    assert "tie" in classes
    assert min(d["confidence"] for d in wide["detections"]) >= 0.2
    only_ties = await (
        await client.post("/v1/detect?classes=tie&confidence=0.2", data=zidane_jpg, headers=headers)
    ).json()
    assert {d["class"] for d in only_ties["detections"]} == {"tie"}


async def test_per_class_thresholds_from_config(
    aiohttp_client, make_settings, counting_detector, bus_jpg: bytes
) -> None:
    settings = make_settings({"detector": {"warmup": False, "class_thresholds": {"person": 0.95}}})
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    body = await (
        await client.post("/v1/detect", data=bus_jpg, headers={"Content-Type": "image/jpeg"})
    ).json()
    assert all(d["confidence"] >= 0.95 for d in body["detections"] if d["class"] == "person")
    assert persons(body) == 1  # only the one person yolov3-tiny is sure of


async def test_metrics_count_requests(client, bus_jpg: bytes) -> None:
    await client.post("/v1/detect", data=bus_jpg, headers={"Content-Type": "image/jpeg"})
    await client.post("/v1/detect", data=b"", headers={"Content-Type": "image/jpeg"})
    text = await (await client.get("/metrics")).text()
    assert 'yolo26_inference_requests_total{endpoint="/v1/detect",status="success"} 1.0' in text
    assert 'yolo26_inference_requests_total{endpoint="/v1/detect",status="error"} 1.0' in text
    assert "vigil_detector_batch_size_count 1.0" in text
    assert 'vigil_http_errors_total{code="empty_body"} 1.0' in text
    assert "yolo26_model_loaded 1.0" in text
    assert 'vigil_device_budget_bytes{device="cpu"}' in text


async def test_reduced_jpeg_decode_maps_boxes_to_the_original(
    client, darknet_detector, bus_jpg: bytes
) -> None:
    """/v1/detect decodes JPEGs at a DCT scale near the input size; boxes still fit the image."""
    from addon_server.imaging import decode

    reduced = decode(bus_jpg, max_pixels=10**8, min_side=416)
    assert reduced.pixels.shape[:2] == (540, 405)  # 1/2 scale, longer side still >= 416
    assert (reduced.width, reduced.height) == (810, 1080)
    full = decode(bus_jpg, max_pixels=10**8)
    best_full = max(
        (d for d in darknet_detector.detect_batch([full.pixels])[0] if d.class_name == "person"),
        key=lambda d: d.confidence,
    )
    body = await (
        await client.post("/v1/detect", data=bus_jpg, headers={"Content-Type": "image/jpeg"})
    ).json()
    best = body["detections"][0]["bbox"]
    ix = max(
        0,
        min(best["x"] + best["width"], best_full.x + best_full.width) - max(best["x"], best_full.x),
    )
    iy = max(
        0,
        min(best["y"] + best["height"], best_full.y + best_full.height)
        - max(best["y"], best_full.y),
    )
    union = best["width"] * best["height"] + best_full.width * best_full.height - ix * iy
    assert ix * iy / union > 0.8
