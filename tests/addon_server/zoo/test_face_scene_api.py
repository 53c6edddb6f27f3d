"""The face, fall, plate, segmentation and quality models through the real add-on's /v1/enrich."""

from __future__ import annotations

import json

from aiohttp import FormData

from addon_server.app import create_app
from tests.addon_server.conftest import needs_shared_models
from tests.addon_server.zoo.real_photos import ZIDANE_PERSONS

MODELS = (
    "face_detector",
    "demographics",
    "emotion",
    "person_segmentation",
    "image_quality",
    "fall_detector",
    "plate_reader",
)


@needs_shared_models("gear.onnx", "emotion.onnx", "meet.onnx")
async def test_zidane_through_enrich(
    aiohttp_client, make_settings, counting_detector, zidane_jpg
) -> None:
    settings = make_settings({"detector": {"warmup": False}})
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    detections = json.dumps([d.as_json() for d in ZIDANE_PERSONS])
    form = FormData()
    form.add_field("image", zidane_jpg, filename="zidane.jpg", content_type="image/jpeg")
    form.add_field("detections", detections)
    form.add_field("models", ",".join(MODELS))
    response = await client.post("/v1/enrich", data=form)
    assert response.status == 200, await response.text()
    body = await response.json()
    results, skipped = body["enrichments"]["results"], body["enrichments"]["skipped"]
    assert skipped == {}
    assert set(results) == set(MODELS)
    assert results["face_detector"]["count"] == 2
    assert [f["gender"] for f in results["demographics"]["faces"]] == ["male", "male"]
    assert results["demographics"]["face_source"] == "centerface"
    assert len(results["emotion"]["faces"]) == 2
    assert all(p["person_fraction"] > 0.5 for p in results["person_segmentation"]["persons"])
    assert results["image_quality"]["flags"] == []
    assert results["fall_detector"]["fall_detected"] is False
    assert results["plate_reader"]["plates"] == []
    assert "race" not in json.dumps(body).lower()
    assert all(f"enrich_{m}" in body["timings_ms"] for m in MODELS)

    models = {m["name"]: m for m in (await (await client.get("/v1/models")).json())["models"]}
    for name in MODELS:
        assert models[name]["state"] == "loaded", models[name]
        print(f"[zoo measured] {name}: {models[name]}")
