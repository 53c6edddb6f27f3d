"""/health ``issues`` on a machine without a GPU: the CPU-only note and its severity.

This machine has no CUDA device, so the first test is the real thing: discovery, placement
and /health as the add-on runs them here. A GPU enters only as a discovered-device record
(the one part that cannot run here), to show the note goes when a GPU is present.
"""

from __future__ import annotations

from addon_server.app import create_app
from addon_server.devices import GIB, DiscoveredDevice, discover
from tests.addon_server.conftest import SettingsFactory

CPU = DiscoveredDevice("cpu", "cpu", "CPU", 32 * GIB)
GPU0 = DiscoveredDevice("cuda:0", "cuda", "NVIDIA GeForce RTX 3090", 24 * GIB)


async def test_cpu_only_is_reported_as_information(
    aiohttp_client, make_settings: SettingsFactory, counting_detector
) -> None:
    """No GPU here: /health says so, once, as information that leaves the status healthy."""
    assert all(d.kind == "cpu" for d in discover()), "this test expects a machine without GPU"
    settings = make_settings({"detector": {"warmup": False}})
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    body = await (await client.get("/health")).json()
    assert body["cuda_available"] is False
    assert body["status"] == "healthy"
    assert [(i["code"], i["severity"]) for i in body["issues"]] == [("cpu_only", "info")]
    assert "CPU" in body["issues"][0]["message"]


async def test_no_cpu_only_note_with_a_gpu(
    aiohttp_client, make_settings: SettingsFactory, counting_detector
) -> None:
    """With a GPU present nothing is said."""
    settings = make_settings(
        {"detector": {"warmup": False}, "devices": {"cpu": {"services": ["detector"]}}}
    )
    client = await aiohttp_client(
        create_app(settings, detector=counting_detector, discovered=[CPU, GPU0])
    )
    body = await (await client.get("/health")).json()
    assert body["issues"] == []


async def test_a_missing_configured_gpu_is_a_warning_not_a_note(
    aiohttp_client, make_settings: SettingsFactory, counting_detector
) -> None:
    """A GPU the configuration asks for and lacks: service_fallback warnings, no note too."""
    settings = make_settings(
        {
            "detector": {"warmup": False},
            "devices": {"cuda:0": {"budget_gb": 10, "services": ["detector"]}},
        }
    )
    client = await aiohttp_client(
        create_app(settings, detector=counting_detector, discovered=[CPU])
    )
    body = await (await client.get("/health")).json()
    assert body["status"] == "degraded"
    assert [(i["code"], i["severity"]) for i in body["issues"]] == [("service_fallback", "warning")]
