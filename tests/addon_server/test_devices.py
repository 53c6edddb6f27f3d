"""Device discovery, per-device budgets, placement and GPU→CPU fallback.

No GPU exists on the test machine, so GPUs enter as discovered-device records — the one part
that cannot run here; the placement logic and the server's /health are the real ones.
"""

from __future__ import annotations

import logging

import pytest

from addon_server.app import create_app
from addon_server.devices import GIB, DeviceTable, DiscoveredDevice, PlacementError, discover
from tests.addon_server.conftest import SHARED_MODELS, needs_shared_models

CPU = DiscoveredDevice("cpu", "cpu", "CPU", 32 * GIB)
GPU0 = DiscoveredDevice("cuda:0", "cuda", "NVIDIA GeForce RTX 3090", 24 * GIB)
GPU1 = DiscoveredDevice("cuda:1", "cuda", "NVIDIA GeForce GTX 1650", 4 * GIB)


def test_discover_always_has_the_cpu() -> None:
    found = discover()
    assert found[0].device_id == "cpu"
    assert found[0].total_bytes > 0
    assert all(d.kind == "cuda" for d in found[1:])


def test_budget_table_and_placement(make_settings) -> None:
    settings = make_settings(
        {
            "devices": {
                "cuda:0": {"budget_gb": 22, "services": ["llm", "detector"]},
                "cuda:1": {"budget_gb": 3.5, "services": ["zoo"]},
                "cpu": {"budget_gb": 8},
            }
        }
    )
    table = DeviceTable(settings.devices, [CPU, GPU0, GPU1])
    assert table.device_for("detector") == "cuda:0"
    assert table.device_for("llm") == "cuda:0"
    assert table.device_for("zoo") == "cuda:1"
    assert table.devices["cuda:0"].budget_bytes == 22 * GIB
    assert table.devices["cuda:1"].budget_bytes == int(3.5 * GIB)
    assert table.devices["cpu"].budget_bytes == 8 * GIB
    table.reserve("cuda:1", "zoo:pose", GIB)
    table.reserve("cuda:1", "zoo:faces", GIB // 2)
    assert table.used_bytes("cuda:1") == GIB + GIB // 2
    assert table.free_budget_bytes("cuda:1") == int(3.5 * GIB) - GIB - GIB // 2
    table.release("cuda:1", "zoo:pose")
    assert table.used_bytes("cuda:1") == GIB // 2


def test_unlisted_services_go_to_the_first_gpu_with_default_budget(make_settings) -> None:
    settings = make_settings({}, VRAM_BUDGET_GB="6")
    table = DeviceTable(settings.devices, [CPU, GPU0])
    assert {p.device for p in table.placements.values()} == {"cuda:0"}
    assert table.devices["cuda:0"].budget_bytes == 6 * GIB


def test_missing_gpu_falls_back_to_cpu_with_one_warning(make_settings, caplog) -> None:
    settings = make_settings({"devices": {"cuda:1": {"services": ["detector", "zoo"]}}})
    with caplog.at_level(logging.WARNING, logger="addon_server.devices"):
        table = DeviceTable(settings.devices, [CPU, GPU0])
    detector = table.placements["detector"]
    assert (detector.device, detector.requested_device, detector.fallback) == (
        "cpu",
        "cuda:1",
        True,
    )
    warnings = [r for r in caplog.records if "falls back" in r.getMessage()]
    assert len(warnings) == 2  # one per service, once, at startup
    assert "detector" in warnings[0].getMessage()
    assert table.devices["cuda:1"].present is False


def test_strict_placement_refuses(make_settings) -> None:
    settings = make_settings({"devices": {"strict": True, "cuda:1": {"services": ["zoo"]}}})
    with pytest.raises(PlacementError, match="cuda:1"):
        DeviceTable(settings.devices, [CPU])


@needs_shared_models("faceres.onnx")
async def test_health_shows_placement_and_fallback(
    aiohttp_client, make_settings, counting_detector
) -> None:
    settings = make_settings(
        {
            "detector": {"warmup": False},
            "devices": {"cuda:0": {"budget_gb": 10, "services": ["detector"]}},
        }
    )
    app = create_app(settings, detector=counting_detector, discovered=[CPU])
    client = await aiohttp_client(app)
    body = await (await client.get("/health")).json()
    assert body["status"] == "degraded"
    assert body["services"]["detector"] == {
        "device": "cpu",
        "requested_device": "cuda:0",
        "fallback": True,
        "reason": "cuda:0 is not present",
    }
    assert body["issues"][0]["code"] == "service_fallback"
    assert body["issues"][0]["service"] == "detector"
    devices = {d["id"]: d for d in body["devices"]}
    assert devices["cuda:0"]["present"] is False
    faceres = body["models"][1]["measured_bytes"]  # measured at load, not the file's size
    assert faceres and faceres != (SHARED_MODELS / "faceres.onnx").stat().st_size
    # the zoo has loaded nothing, but the runtimes it set up at start are on the same ledger
    zoo = await (await client.get("/v1/zoo/status")).json()
    (zoo_cpu,) = [d for d in zoo["devices"] if d["device"] == "cpu"]
    others = devices["cpu"]["used_bytes"] - counting_detector.memory_bytes() - faceres
    assert abs(others - zoo_cpu["zoo_used_mb"] * 2**20) <= 0.05 * 2**20
    assert "detector" in devices["cpu"]["services"]
    assert body["models"][0]["device"] == "cpu"
    assert body["cuda_available"] is False


@needs_shared_models("faceres.onnx")
async def test_health_shape(aiohttp_client, make_settings, counting_detector) -> None:
    settings = make_settings({"detector": {"warmup": False}})
    client = await aiohttp_client(
        create_app(settings, detector=counting_detector, discovered=[CPU])
    )
    body = await (await client.get("/health")).json()
    assert body["status"] == "healthy"
    assert body["model_loaded"] is True
    assert body["version"] == "0.1.0"
    assert len(body["instance_id"]) == 32
    assert body["uptime_seconds"] >= 0
    assert [i["code"] for i in body["issues"]] == ["cpu_only"]  # information only
    assert body["models"][0] == {
        "name": "yolov3-tiny-coco",
        "kind": "detector",
        "backend": "darknet",
        "device": "cpu",
        "loaded": True,
        "installed": True,
        "vram_bytes": 0,
        "state": "loaded",
        "measured_bytes": counting_detector.memory_bytes(),
        "estimated_bytes": None,
        "accounted_bytes": counting_detector.memory_bytes(),
        "priority": "critical",
        "category": None,
        "refcount": 0,
        "pinned": False,
        "unloadable": False,
        "unload_pending": False,
        "error": None,
    }
    assert {m["kind"] for m in body["models"][2:]} == {"zoo"}
    assert body["models"][1]["name"] == "faceres"
    assert body["models"][1]["loaded"] is True
    assert body["llm"] == {"mode": "disabled", "state": "disabled", "ready": False}
    again = await (await client.get("/health")).json()
    assert again["instance_id"] == body["instance_id"]


async def test_missing_weights_keep_the_server_up(aiohttp_client, make_settings, bus_jpg) -> None:
    settings = make_settings(
        {"detector": {"backend": "ultralytics", "model_path": "/nonexistent/yolo26m.pt"}}
    )
    client = await aiohttp_client(create_app(settings, discovered=[CPU]))
    body = await (await client.get("/health")).json()
    assert body["status"] == "unhealthy"
    assert body["model_loaded"] is False
    assert body["issues"][0]["code"] == "model_not_installed"
    assert "/nonexistent/yolo26m.pt" in body["issues"][0]["message"]
    resp = await client.post("/v1/detect", data=bus_jpg, headers={"Content-Type": "image/jpeg"})
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "model_not_installed"
