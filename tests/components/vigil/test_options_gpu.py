"""The options flow's GPU step: the add-on's assignment per GPU, shown and applied through it.

Home Assistant runs the real integration and its real client against a stand-in add-on on
loopback (the add-on itself cannot run in this Python; its side of the route is tested in
tests/addon_server/test_gpu_assignment.py). The stand-in answers a two-GPU host in the add-on's
contract: every answer it gives and every body it receives is validated against the committed
openapi.json, so it cannot drift from the real add-on.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from custom_components.vigil.config_flow import GPU_SERVICES
from custom_components.vigil.const import CONF_REQUEST_TIMEOUT, DOMAIN
from homeassistant.const import CONF_API_TOKEN, CONF_HOST, CONF_PORT, CONF_SSL
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import issue_registry as ir
from jsonschema import Draft202012Validator
from pytest_homeassistant_custom_component.common import MockConfigEntry

from .conftest import ENTRY_ID, INSTANCE_ID, gpu_host, load_json
from .test_api import TOKEN, StandIn, error

SPEC = load_json("openapi.json")
GIB = 1024**3
OVERRIDE = "/deploy/docker-compose.gpu-override.yml"
RUNNING = {
    "cpu": {"services": ["llm"]},
    "cuda:0": {"budget_gb": 10.0, "services": ["detector", "zoo"]},
}


def valid(schema: str, body: Any) -> Any:
    """Check body against one of the add-on's published schemas."""
    Draft202012Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": SPEC["components"]}
    ).validate(body)
    return body


class GpuHost(StandIn):
    """A stand-in add-on on a host with two GPUs; it keeps what PUT writes as pending."""

    def __init__(self, gpus: int = 2) -> None:
        """Initialize."""
        super().__init__()
        self.gpus = gpus
        self.assignment: dict[str, Any] = RUNNING if gpus else {}
        self.pending: dict[str, Any] | None = None
        self.puts: list[dict[str, Any]] = []
        self.refuse: str | None = None
        self.get_status = 200
        self.server: TestServer | None = None

    def app(self) -> web.Application:
        """Build the app."""
        app = web.Application(middlewares=[self.auth])
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/gpu-assignment", self.get)
        app.router.add_put("/v1/gpu-assignment", self.put)
        return app

    async def health(self, request: web.Request) -> web.Response:
        """The recorded health, as a GPU host gives it, with the restart notice if pending."""
        health = gpu_host(load_json("health.json")) if self.gpus else load_json("health.json")
        if self.pending is not None:
            notice = {
                "code": "restart_required",
                "severity": "info",
                "message": f"a new GPU assignment is written ({OVERRIDE}); it applies when "
                "the add-on's container is restarted with it",
            }
            health["issues"] = [*health["issues"], valid("HealthIssue", notice)]
        return web.json_response(health)

    async def models(self, request: web.Request) -> web.Response:
        """The recorded model list (the integration checks the token with it)."""
        return web.json_response(load_json("models.json"))

    def answer(self) -> dict[str, Any]:
        """The GpuAssignment answer."""
        cards = [("NVIDIA GeForce RTX 3060", 12), ("NVIDIA GeForce RTX 3090", 24)][: self.gpus]
        devices = [
            {
                "id": "cpu",
                "kind": "cpu",
                "name": "CPU",
                "present": True,
                "budget_bytes": 8 * GIB,
                "total_bytes": 16 * GIB,
                "services": list(self.assignment.get("cpu", {}).get("services", [])),
            }
        ]
        for index, (name, size) in enumerate(cards):
            entry = self.assignment.get(f"cuda:{index}", {})
            devices.append(
                {
                    "id": f"cuda:{index}",
                    "kind": "cuda",
                    "name": name,
                    "present": True,
                    "budget_bytes": int(entry.get("budget_gb", size) * GIB),
                    "total_bytes": size * GIB,
                    "services": list(entry.get("services", [])),
                }
            )
        return valid(
            "GpuAssignment",
            {
                "devices": devices,
                "assignment": self.assignment,
                "pending": self.pending,
                "restart_required": self.pending is not None,
                "host_gpus": [
                    {"id": d["id"], "name": d["name"], "total_bytes": d["total_bytes"]}
                    for d in devices
                    if d["kind"] == "cuda"
                ],
                "override_path": OVERRIDE,
                "reference_path": "/deploy/GPU_ASSIGNMENT.md",
                "devices_path": "/deploy/devices.yaml",
            },
        )

    async def get(self, request: web.Request) -> web.Response:
        """GET /v1/gpu-assignment."""
        if self.get_status == 404:
            return error(404, "not_found", "no route for GET /v1/gpu-assignment")
        if self.get_status != 200:
            return error(self.get_status, "internal_error", "internal server error")
        return web.json_response(self.answer())

    async def put(self, request: web.Request) -> web.Response:
        """PUT /v1/gpu-assignment: record the body; refuse it when told to."""
        body = valid("GpuAssignmentRequest", await request.json())
        self.puts.append(body)
        if self.refuse:
            return error(400, "bad_parameter", self.refuse)
        self.pending = body["devices"]
        return web.json_response(self.answer())

    def restart(self) -> None:
        """The user restarted the container: the pending assignment now runs."""
        self.assignment, self.pending = self.pending or self.assignment, None


@pytest.fixture
def gpus() -> int:
    """GPUs of the stand-in's host."""
    return 2


@pytest.fixture
async def addon(
    hass: HomeAssistant, socket_enabled: None, gpus: int
) -> AsyncGenerator[tuple[GpuHost, MockConfigEntry]]:
    """The stand-in on loopback and a loaded config entry for it."""
    stand_in = GpuHost(gpus)
    server = stand_in.server = TestServer(stand_in.app(), host="127.0.0.1")
    await server.start_server()
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Vigil (127.0.0.1)",
        entry_id=ENTRY_ID,
        unique_id=INSTANCE_ID,
        data={
            CONF_HOST: "127.0.0.1",
            CONF_PORT: server.port,
            CONF_API_TOKEN: TOKEN,
            CONF_SSL: False,
        },
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    yield stand_in, entry
    await hass.async_block_till_done()  # a reload the options started
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    await server.close()


async def start(hass: HomeAssistant, entry: MockConfigEntry) -> dict[str, Any]:
    """Open the options and submit the first form (the analysis timeout)."""
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["step_id"] == "init"
    return await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_REQUEST_TIMEOUT: 90.0}
    )


def restart_issue(hass: HomeAssistant) -> ir.IssueEntry | None:
    """The restart repair of the entry, if raised."""
    return ir.async_get(hass).async_get_issue(DOMAIN, f"{ENTRY_ID}_restart_required")


async def test_shows_each_gpu_and_applies_a_new_assignment(
    hass: HomeAssistant, addon: tuple[GpuHost, MockConfigEntry]
) -> None:
    """Per GPU: what runs now, a budget and the services; the add-on gets one new assignment,
    a repair says to restart its container, and it goes once the add-on runs the new one."""
    stand_in, entry = addon
    result = await start(hass, entry)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "gpu"
    placeholders = result["description_placeholders"]
    assert placeholders["device"] == "cuda:0"
    assert placeholders["position"] == "1/2"
    assert placeholders["memory"] == "12.0 GB"
    assert (
        "- cuda:0 (NVIDIA GeForce RTX 3060): detector, zoo; budget 10.0 GB of 12.0 GB"
        in (placeholders["running"])
    )
    assert (
        "- cuda:1 (NVIDIA GeForce RTX 3090): -; budget 24.0 GB of 24.0 GB"
        in (placeholders["running"])
    )
    assert placeholders["pending"] == "-"
    schema = result["data_schema"].schema
    suggested = {str(key): key.description["suggested_value"] for key in schema}
    assert suggested == {"budget_gb": 10.0, "services": ["detector", "zoo"]}

    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"budget_gb": 8, "services": ["detector"]}
    )
    assert (result["step_id"], result["description_placeholders"]["device"]) == ("gpu", "cuda:1")
    assert result["description_placeholders"]["position"] == "2/2"
    assert restart_issue(hass) is None
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"budget_gb": 20.5, "services": ["llm", "zoo"]}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert entry.options == {CONF_REQUEST_TIMEOUT: 90}
    assert stand_in.puts == [
        {
            "devices": {
                "cpu": {"services": []},  # the LLM moved onto a GPU
                "cuda:0": {"budget_gb": 8.0, "services": ["detector"]},
                "cuda:1": {"budget_gb": 20.5, "services": ["llm", "zoo"]},
            }
        }
    ]
    issue = restart_issue(hass)
    assert issue is not None
    assert issue.translation_key == "restart_required"
    assert OVERRIDE in (issue.translation_placeholders or {})["message"]

    # Opening the options again shows what waits for the restart, as the starting point.
    result = await start(hass, entry)
    assert "cuda:1: llm, zoo; budget 20.5 GB" in result["description_placeholders"]["pending"]
    suggested = {
        str(key): key.description["suggested_value"] for key in result["data_schema"].schema
    }
    assert suggested == {"budget_gb": 8.0, "services": ["detector"]}
    hass.config_entries.options.async_abort(result["flow_id"])

    stand_in.restart()
    await entry.runtime_data.server.async_refresh()
    await hass.async_block_till_done()
    assert restart_issue(hass) is None


async def test_a_refused_assignment_names_the_addons_reason(
    hass: HomeAssistant, addon: tuple[GpuHost, MockConfigEntry]
) -> None:
    """The add-on's 400 message is shown on the first GPU's form; nothing is saved until the
    user sends one the add-on accepts."""
    stand_in, entry = addon
    stand_in.refuse = "devices.cuda:1.services: 'llm' is already placed on cpu"
    result = await start(hass, entry)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"services": ["detector", "zoo"]}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"services": ["llm"]}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_assignment"}
    assert result["description_placeholders"]["error"] == stand_in.refuse
    assert result["description_placeholders"]["device"] == "cuda:0"
    assert entry.options == {}
    assert stand_in.pending is None

    stand_in.refuse = None
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"budget_gb": 10, "services": ["detector", "zoo"]}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"services": ["llm"]}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert stand_in.pending == {
        "cpu": {"services": []},
        "cuda:0": {"budget_gb": 10.0, "services": ["detector", "zoo"]},
        "cuda:1": {"services": ["llm"]},
    }


async def test_the_same_assignment_is_not_sent(
    hass: HomeAssistant, addon: tuple[GpuHost, MockConfigEntry]
) -> None:
    """Only the timeout changed: nothing is written, no restart is asked for."""
    stand_in, entry = addon
    result = await start(hass, entry)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"budget_gb": 10.0, "services": ["detector", "zoo"]}
    )
    result = await hass.config_entries.options.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {CONF_REQUEST_TIMEOUT: 90}
    assert stand_in.puts == []
    await hass.async_block_till_done()
    assert restart_issue(hass) is None


@pytest.mark.parametrize("gpus", [0])
async def test_no_gpu_step_on_a_cpu_only_addon(
    hass: HomeAssistant, addon: tuple[GpuHost, MockConfigEntry]
) -> None:
    """Without a GPU there is nothing to assign: the options end after the timeout."""
    _, entry = addon
    result = await start(hass, entry)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {CONF_REQUEST_TIMEOUT: 90}


@pytest.mark.parametrize("status", [404, 500], ids=["addon-without-the-route", "addon-error"])
async def test_no_gpu_step_when_the_addon_cannot_say(
    hass: HomeAssistant,
    addon: tuple[GpuHost, MockConfigEntry],
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An add-on from before the route (404) or failing (500): the other options still
    apply; only a failure is logged."""
    stand_in, entry = addon
    stand_in.get_status = status
    result = await start(hass, entry)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {CONF_REQUEST_TIMEOUT: 90}
    logged = "Cannot read the Vigil add-on's GPU assignment" in caplog.text
    assert logged is (status == 500)


@pytest.mark.parametrize(
    ("interruption", "says"),
    [("addon_stopped", "cannot reach"), ("entry_unloaded", "the integration is not loaded")],
)
async def test_interrupted_before_the_assignment_is_sent(
    hass: HomeAssistant, addon: tuple[GpuHost, MockConfigEntry], interruption: str, says: str
) -> None:
    """The add-on stops, or the entry is unloaded, between two GPU forms: nothing is sent,
    the form says why."""
    stand_in, entry = addon
    result = await start(hass, entry)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"services": ["detector"]}
    )
    if interruption == "addon_stopped":
        assert stand_in.server is not None
        await stand_in.server.close()
    else:
        assert await hass.config_entries.async_unload(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"services": ["llm", "zoo"]}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}
    assert says in result["description_placeholders"]["error"]
    assert stand_in.puts == []
    hass.config_entries.options.async_abort(result["flow_id"])


def test_gpu_services_are_the_addons() -> None:
    """The services offered per GPU are the add-on's (its contract's enum)."""
    entry = SPEC["components"]["schemas"]["DeviceEntry"]
    assert list(GPU_SERVICES) == entry["properties"]["services"]["items"]["enum"]
