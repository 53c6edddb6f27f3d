"""The zoo through the real add-on: configuration, failures that degrade but never break."""

from __future__ import annotations

import pytest

from addon_server.app import create_app
from addon_server.config import ConfigError, parse

JPEG = {"Content-Type": "image/jpeg"}


def test_zoo_model_names_are_checked_and_env_lists_are_read() -> None:
    with pytest.raises(ConfigError, match=r"zoo\.preload: unknown model 'posse'"):
        parse({"zoo": {"preload": ["posse"]}}, environ={})
    settings = parse({}, environ={"ENRICHMENT_PRELOAD_MODELS": "pose, threat_detector"})
    assert settings.zoo.preload == ("pose", "threat_detector")
    disabled = parse({}, environ={"ENRICHMENT_DISABLED_MODELS": "emotion"})
    assert disabled.zoo.disabled_models == frozenset({"emotion"})


async def test_a_corrupt_model_file_degrades_health_and_skips_the_enrichment(
    aiohttp_client, make_settings, counting_detector, tmp_path, bus_jpg
) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "movenet-multipose.onnx").write_bytes(b"not an onnx file")
    settings = make_settings(
        {"detector": {"warmup": False}, "reid": {"models_dir": str(models_dir)}}
    )
    client = await aiohttp_client(create_app(settings, detector=counting_detector))

    models = (await (await client.get("/v1/models")).json())["models"]
    by_name = {m["name"]: m for m in models}
    assert by_name["pose"]["state"] == "unloaded"  # the file is there: installed
    assert by_name["pet_classifier"]["state"] == "not_installed"
    assert "efficientnet-lite0.onnx" in by_name["pet_classifier"]["error"]

    failed = await client.post("/v1/models/pose/load")
    assert failed.status == 503
    assert (await failed.json())["error"]["code"] == "model_load_failed"
    health = await (await client.get("/health")).json()
    assert health["status"] == "degraded"
    issue = next(i for i in health["issues"] if i["code"] == "zoo_model_failed")
    assert issue["model"] == "pose" and issue["severity"] == "warning"

    # The analysis still answers; the failed model is skipped with its reason.
    answer = await client.post("/v1/analyze?camera=porch&llm=false", data=bus_jpg, headers=JPEG)
    assert answer.status == 200
    event = await answer.json()
    assert event["enrichments"]["skipped"]["pose"]["reason"] == "load_failed"
    assert "enrich" in event["timings_ms"]

    missing = await client.post("/v1/pose-analyze", data=bus_jpg, headers=JPEG)
    assert missing.status == 503
    absent = await client.post("/v1/pet-classify", data=bus_jpg, headers=JPEG)
    assert absent.status == 409
    body = await absent.json()
    assert body["error"]["code"] == "model_not_installed"
    assert str(models_dir / "efficientnet-lite0.onnx") in body["error"]["message"]
