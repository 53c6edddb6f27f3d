"""``/v1/gpu-assignment``: show the GPU assignment, write a new one for the next start.

The real app on loopback, real files in a temporary ``deploy.override_dir``, and the next
start is a real second app built from the same config. This machine has no GPU, so the two GPUs
of a homelab host enter as discovered-device records only (the one part that cannot run here);
every running service stays on the CPU, the new assignment is only written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from addon_server.api import ALL_ROUTES
from addon_server.api.openapi import build_spec
from addon_server.app import create_app
from addon_server.config import DEVICES_FILE, ConfigError, parse
from addon_server.devices import GIB, DiscoveredDevice
from addon_server.gpu_config import HEADER, OVERRIDE_FILE, REFERENCE_FILE
from tests.addon_server.conftest import SettingsFactory
from tests.addon_server.test_contract import response_schema, validator
from tests.addon_server.test_deploy import COMPOSE_SERVICE, gpu_devices, load_compose

CPU = DiscoveredDevice("cpu", "cpu", "CPU", 32 * GIB)
GPUS = [
    DiscoveredDevice("cuda:0", "cuda", "NVIDIA GeForce RTX 3060", 12 * GIB),
    DiscoveredDevice("cuda:1", "cuda", "NVIDIA GeForce RTX 3090", 24 * GIB),
]
ROUTE = "/v1/gpu-assignment"
RUNNING = {"cpu": {"services": ["detector", "llm", "zoo"]}, "cuda:0": {"budget_gb": 10}}
"""What the add-on runs with: everything on the CPU (nothing here touches a GPU)."""
RUNNING_ENTRIES = RUNNING | {"cuda:0": {"budget_gb": 10.0, "services": []}}
"""RUNNING as the answer states it: every entry lists its services."""
NEW = {
    "cuda:0": {"budget_gb": 6, "services": ["detector"]},
    "cuda:1": {"budget_gb": 20.5, "services": ["llm", "zoo"]},
}
SPEC = build_spec(ALL_ROUTES)


def text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def written(folder: Path) -> list[str]:
    """What a request left in the override dir (nothing, after a refusal)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def check(method: str, status: int, body: Any) -> None:
    """The answer is what the OpenAPI document promises for that status."""
    validator(SPEC, response_schema(SPEC, method, ROUTE, status)).validate(body)


@pytest.fixture
def override_dir(tmp_path: Path) -> Path:
    return tmp_path / "deploy"


@pytest.fixture
def document(override_dir: Path) -> dict[str, Any]:
    return {
        "detector": {"warmup": False},
        "devices": RUNNING,
        "deploy": {"override_dir": str(override_dir)},
    }


@pytest.fixture
async def client(aiohttp_client, make_settings: SettingsFactory, counting_detector, document):
    settings = make_settings(document)
    return await aiohttp_client(
        create_app(settings, detector=counting_detector, discovered=[CPU, *GPUS])
    )


async def test_shows_the_assignment_and_the_hosts_gpus(client, override_dir: Path) -> None:
    resp = await client.get(ROUTE)
    assert resp.status == 200
    body = await resp.json()
    check("GET", 200, body)
    by_id = {d["id"]: d for d in body["devices"]}
    assert by_id["cpu"]["services"] == ["detector", "llm", "zoo"]
    assert by_id["cuda:0"]["budget_bytes"] == 10 * GIB
    assert by_id["cuda:1"]["budget_bytes"] == 24 * GIB  # no budget set: the whole card
    assert body["assignment"] == RUNNING_ENTRIES
    assert body["host_gpus"] == [
        {"id": g.device_id, "name": g.name, "total_bytes": g.total_bytes} for g in GPUS
    ]
    assert (body["pending"], body["restart_required"]) == (None, False)
    assert body["override_path"] == str(override_dir / OVERRIDE_FILE)
    assert body["reference_path"] == str(override_dir / REFERENCE_FILE)
    assert body["devices_path"] == str(override_dir / DEVICES_FILE)


async def test_new_assignment_is_written_and_applies_at_the_next_start(
    client, aiohttp_client, make_settings: SettingsFactory, counting_detector, document
) -> None:
    status_before = (await (await client.get("/health")).json())["status"]
    resp = await client.put(ROUTE, json={"devices": NEW})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    check("PUT", 200, body)
    assert body["restart_required"] is True
    assert body["pending"] == NEW
    # the running add-on keeps its placement until the container restarts
    assert {d["id"]: d["services"] for d in body["devices"]}["cpu"] == ["detector", "llm", "zoo"]
    assert body["assignment"] == RUNNING_ENTRIES

    override_text = text(body["override_path"])
    assert override_text.splitlines()[0] == HEADER
    service = load_compose(override_text)["services"][COMPOSE_SERVICE]
    (gpu,) = gpu_devices(service)
    assert gpu["device_ids"] == ["0", "1"]
    assert service["environment"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    reference = text(body["reference_path"])
    assert "| cuda:0 | detector | 6 GB |" in reference
    assert "| cuda:1 | llm, zoo | 20.5 GB |" in reference
    assert f"-f {body['override_path']} up -d" in reference
    assert yaml.safe_load(text(body["devices_path"])) == {"devices": NEW}
    assert written(Path(body["override_path"]).parent) == sorted(
        [OVERRIDE_FILE, REFERENCE_FILE, DEVICES_FILE]
    ), "and no temporary file left"

    again = await (await client.get(ROUTE)).json()
    assert (again["pending"], again["restart_required"]) == (NEW, True)
    health = await (await client.get("/health")).json()
    assert health["status"] == status_before, "a waiting restart does not degrade the add-on"
    notice = [i for i in health["issues"] if i["code"] == "restart_required"]
    assert len(notice) == 1
    assert notice[0]["severity"] == "info"
    assert body["override_path"] in notice[0]["message"]

    # The next start: the same config, and devices.yaml replaces its per-device entries.
    restarted = make_settings(document)
    assert {e.device_id: (e.budget_gb, e.services) for e in restarted.devices.devices} == {
        "cuda:0": (6.0, ("detector",)),
        "cuda:1": (20.5, ("llm", "zoo")),
    }
    client2 = await aiohttp_client(
        create_app(restarted, detector=counting_detector, discovered=[CPU, *GPUS])
    )
    after = await (await client2.get(ROUTE)).json()
    assert (after["pending"], after["restart_required"]) == (None, False)
    assert after["assignment"] == NEW
    by_id = {d["id"]: d for d in after["devices"]}
    assert (by_id["cuda:0"]["budget_bytes"], by_id["cuda:0"]["services"]) == (
        6 * GIB,
        ["detector"],
    )
    assert by_id["cuda:1"]["services"] == ["llm", "zoo"]
    health = await (await client2.get("/health")).json()
    assert "restart_required" not in {i["code"] for i in health["issues"]}


ENTRY_ERRORS = [
    ({"cuda:0": {"budget_gb": -1}}, "devices.cuda:0.budget_gb"),
    ({"cuda:0": {"budget_gb": "lots"}}, "devices.cuda:0.budget_gb"),
    ({"cuda:0": {"services": ["gpu"]}}, "devices.cuda:0.services"),
    ({"cuda:0": {"colour": "red"}}, "devices.cuda:0.colour"),
    ({"gpu0": {"services": ["detector"]}}, "devices.gpu0"),
    (
        {"cuda:0": {"services": ["detector"]}, "cuda:1": {"services": ["detector"]}},
        "devices.cuda:1.services",
    ),
]


@pytest.mark.parametrize(("devices", "key"), ENTRY_ERRORS, ids=[k for _, k in ENTRY_ERRORS])
async def test_an_entry_the_config_refuses_is_a_400_with_the_configs_words(
    client, override_dir: Path, devices: dict[str, Any], key: str
) -> None:
    """One set of rules: the API's message is the config loader's, word for word."""
    with pytest.raises(ConfigError) as refused:
        parse({"devices": devices}, environ={})
    resp = await client.put(ROUTE, json={"devices": devices})
    assert resp.status == 400
    body = await resp.json()
    check("PUT", 400, body)
    assert body["error"]["code"] == "bad_parameter"
    assert body["error"]["message"].startswith(key)
    assert body["error"]["message"] == str(refused.value)
    assert written(override_dir) == [], "nothing is written for a refused assignment"
    assert (await client.get(ROUTE)).status == 200, "the add-on keeps serving"


BODY_ERRORS = [
    (b"{not json", "bad_json", "JSON object"),
    (b"[1, 2]", "bad_json", "JSON object"),
    (json.dumps({"devices": NEW, "restart": True}).encode(), "bad_parameter", "restart"),
    (b"{}", "bad_parameter", "devices: required"),
    (json.dumps({"devices": ["cuda:0"]}).encode(), "bad_parameter", "devices: expected"),
    (json.dumps({"devices": {"strict": True}}).encode(), "bad_parameter", "devices.strict: not"),
    (
        json.dumps({"devices": {"cuda:3": {"services": ["detector"]}}}).encode(),
        "bad_parameter",
        "devices.cuda:3: this host has 2 GPU(s)",
    ),
    (
        json.dumps({"devices": {"cpu": {"services": ["detector"]}}}).encode(),
        "bad_parameter",
        "devices: no GPU hosts a service",
    ),
]


@pytest.mark.parametrize(
    ("raw", "code", "says"), BODY_ERRORS, ids=[s.split(":")[0] for _, _, s in BODY_ERRORS]
)
async def test_a_bad_body_is_a_400_naming_the_problem(
    client, override_dir: Path, raw: bytes, code: str, says: str
) -> None:
    resp = await client.put(ROUTE, data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    body = await resp.json()
    check("PUT", 400, body)
    assert body["error"]["code"] == code
    assert says in body["error"]["message"]
    assert written(override_dir) == []


async def test_a_refused_assignment_leaves_the_written_one_intact(client) -> None:
    first = await (await client.put(ROUTE, json={"devices": NEW})).json()
    files = [first[k] for k in ("override_path", "reference_path", "devices_path")]
    before = [text(p) for p in files]
    resp = await client.put(ROUTE, json={"devices": {"cuda:7": {"services": ["llm"]}}})
    assert resp.status == 400
    assert [text(p) for p in files] == before
    assert (await (await client.get(ROUTE)).json())["pending"] == NEW


async def test_an_unwritable_override_dir_is_a_503(
    aiohttp_client, make_settings: SettingsFactory, counting_detector, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    settings = make_settings(
        {"detector": {"warmup": False}, "devices": RUNNING},
        VIGIL_OVERRIDE_DIR=str(blocker / "deploy"),
    )
    client = await aiohttp_client(
        create_app(settings, detector=counting_detector, discovered=[CPU, *GPUS])
    )
    resp = await client.put(ROUTE, json={"devices": NEW})
    assert resp.status == 503
    body = await resp.json()
    check("PUT", 503, body)
    assert body["error"]["code"] == "storage_unavailable"
    assert str(blocker / "deploy") in body["error"]["message"]


def test_the_override_dir_defaults_to_the_data_dir(tmp_path: Path) -> None:
    settings = parse({"server": {"data_dir": str(tmp_path)}}, environ={})
    assert settings.deploy.override_dir == tmp_path
    assert settings.deploy.devices_file == tmp_path / DEVICES_FILE


def test_a_broken_devices_file_stops_the_start_naming_file_and_key(tmp_path: Path) -> None:
    (tmp_path / DEVICES_FILE).write_text("devices:\n  cuda:0: {budget_gb: -2}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"devices\.yaml: devices\.cuda:0\.budget_gb"):
        parse({"server": {"data_dir": str(tmp_path)}}, environ={})
    (tmp_path / DEVICES_FILE).write_text("cuda:0: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="one top-level key, 'devices'"):
        parse({"server": {"data_dir": str(tmp_path)}}, environ={})
