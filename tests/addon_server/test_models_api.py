"""/v1/models: listing, unloading and reloading the face embedder, refusing the rest."""

from __future__ import annotations

from addon_server.app import create_app
from tests.addon_server.conftest import SHARED_MODELS, needs_shared_models


@needs_shared_models("faceres.onnx")
async def test_models_load_and_unload(
    aiohttp_client, make_settings, counting_detector, zidane_jpg
) -> None:
    # The zoo off: its loads would move the CPU ledger this test checks to the byte.
    settings = make_settings({"detector": {"warmup": False}, "zoo": {"enabled": False}})
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    models = (await (await client.get("/v1/models")).json())["models"]
    assert [(m["name"], m["kind"], m["loaded"]) for m in models[:2]] == [
        ("yolov3-tiny-coco", "detector", True),
        ("faceres", "face_embedder", True),
    ]
    # Measured after load and warm-up, not the file's size.
    faceres_bytes = models[1]["measured_bytes"]
    assert faceres_bytes and faceres_bytes != (SHARED_MODELS / "faceres.onnx").stat().st_size
    assert models[1]["accounted_bytes"] == faceres_bytes

    async def cpu_used() -> int:
        health = await (await client.get("/health")).json()
        return next(d["used_bytes"] for d in health["devices"] if d["id"] == "cpu")

    before = await cpu_used()
    unloaded = await (await client.post("/v1/models/faceres/unload")).json()
    assert unloaded["loaded"] is False
    assert await cpu_used() == before - faceres_bytes
    event = await (
        await client.post(
            "/v1/analyze?camera=lobby&llm=false",
            data=zidane_jpg,
            headers={"Content-Type": "image/jpeg"},
        )
    ).json()
    assert event["reid"] == []  # no embedder, no re-ID; the event is still made
    reloaded = await (await client.post("/v1/models/faceres/load")).json()
    assert reloaded["loaded"] is True
    assert await cpu_used() == before - faceres_bytes + reloaded["measured_bytes"]
    event = await (
        await client.post(
            "/v1/analyze?camera=lobby&llm=false",
            data=zidane_jpg,
            headers={"Content-Type": "image/jpeg"},
        )
    ).json()
    assert event["reid"]

    detector = await client.post("/v1/models/yolov3-tiny-coco/unload")
    assert detector.status == 409
    assert (await detector.json())["error"]["code"] == "not_unloadable"
    unknown = await client.post("/v1/models/yolo9000/load")
    assert unknown.status == 404
    assert (await unknown.json())["error"]["code"] == "unknown_model"


async def test_missing_embedder_is_reported_not_faked(
    aiohttp_client, make_settings, counting_detector, tmp_path, zidane_jpg
) -> None:
    settings = make_settings(
        {"detector": {"warmup": False}, "reid": {"models_dir": str(tmp_path / "empty")}}
    )
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    health = await (await client.get("/health")).json()
    assert health["status"] == "degraded"
    issue = health["issues"][0]
    assert (issue["code"], issue["model"]) == ("model_not_installed", "faceres")
    assert "faceres.onnx" in issue["message"]
    load = await client.post("/v1/models/faceres/load")
    assert load.status == 409
    assert (await load.json())["error"]["code"] == "model_not_installed"
    event = await (
        await client.post(
            "/v1/analyze?camera=lobby&llm=false",
            data=zidane_jpg,
            headers={"Content-Type": "image/jpeg"},
        )
    ).json()
    assert event["reid"] == []
