"""``/v1/gpu-assignment``: which GPU hosts which service with which budget, and a new one.

Home Assistant's options show the assignment and apply a new one here. The add-on cannot give
its own container other GPUs: a ``PUT`` validates the new per-device entries by the rules of
the config's ``devices:`` section (:func:`~addon_server.config.device_entries_of`), then writes
the Compose override, its reference and ``devices.yaml`` into ``deploy.override_dir``
(:func:`~addon_server.gpu_config.apply`). The running add-on keeps its placement; the new one
applies when the user restarts the container, which stays their choice. Until then the answer
says ``restart_required`` and ``/health`` reports a ``restart_required`` notice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from addon_server.api.errors import ApiError
from addon_server.api.routes import Route, error, json_response
from addon_server.api.schemas import ref
from addon_server.config import (
    ConfigError,
    DeviceSettings,
    device_entries_document,
    device_entries_of,
)
from addon_server.gpu_config import GpuConfigError, OutputPaths, apply, pending
from addon_server.services import SERVICES_KEY, Services

_LOGGER = logging.getLogger(__name__)
_REQUEST_KEYS = frozenset({"devices"})


def _pending(services: Services) -> tuple[DeviceSettings, ...] | None:
    try:
        return pending(services.settings)
    except ConfigError as err:
        raise ApiError(409, "invalid_devices_file", str(err)) from None


def assignment_document(services: Services) -> dict[str, Any]:
    """The ``GpuAssignment`` answer: the placement running now, the configured entries, the
    entries written for the next start (if they differ) and where the files go."""
    settings = services.settings
    table = services.devices
    waiting = _pending(services)
    paths = OutputPaths.of(settings)
    return {
        "devices": [
            {
                "id": d.device_id,
                "kind": d.kind,
                "name": d.name,
                "present": d.present,
                "budget_bytes": d.budget_bytes,
                "total_bytes": d.total_bytes,
                "services": sorted(d.services),
            }
            for d in table.devices.values()
        ],
        "assignment": device_entries_document(settings.devices.devices),
        "pending": None if waiting is None else device_entries_document(waiting),
        "restart_required": waiting is not None,
        "host_gpus": [
            {"id": d.device_id, "name": d.name, "total_bytes": d.total_bytes}
            for d in table.devices.values()
            if d.kind == "cuda" and d.present
        ],
        "override_path": str(paths.override),
        "reference_path": str(paths.reference),
        "devices_path": str(paths.devices),
    }


def restart_issues(services: Services) -> list[dict[str, Any]]:
    """``/health``'s notice while a written assignment waits for a restart (Home Assistant
    shows it as a repair that goes away once the restarted add-on runs the new one)."""
    try:
        waiting = pending(services.settings)
    except ConfigError as err:
        _LOGGER.warning("the devices file cannot be read: %s", err)
        return []
    if waiting is None:
        return []
    override = OutputPaths.of(services.settings).override
    return [
        {
            "code": "restart_required",
            "severity": "info",
            "message": f"a new GPU assignment is written ({override}); it applies when the "
            "add-on's container is restarted with it",
        }
    ]


async def get_assignment(request: web.Request) -> web.Response:
    return web.json_response(assignment_document(request.app[SERVICES_KEY]))


async def _request_entries(request: web.Request) -> tuple[DeviceSettings, ...]:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_json", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    if unknown := sorted(set(body) - _REQUEST_KEYS):
        raise ApiError(400, "bad_parameter", f"{unknown[0]}: unknown key (expected 'devices')")
    if "devices" not in body:
        raise ApiError(400, "bad_parameter", "devices: required")
    try:
        return device_entries_of(body["devices"])
    except ConfigError as err:
        raise ApiError(400, "bad_parameter", str(err)) from None


async def put_assignment(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    entries = await _request_entries(request)
    host_gpus = sum(1 for d in services.devices.devices.values() if d.kind == "cuda" and d.present)
    try:
        await asyncio.to_thread(apply, services.settings, entries, host_gpus)
    except GpuConfigError as err:
        raise ApiError(400, "bad_parameter", str(err)) from None
    except OSError as err:
        folder = services.settings.deploy.override_dir
        raise ApiError(
            503,
            "storage_unavailable",
            f"cannot write the GPU assignment into {folder} ({err.strerror or err})",
        ) from None
    return web.json_response(assignment_document(services))


_ANSWER = json_response("The assignment now and the one waiting for a restart", "GpuAssignment")
ROUTES = [
    Route(
        "GET",
        "/v1/gpu-assignment",
        get_assignment,
        "GPU assignment: services and budgets per device, the host's GPUs, pending restart",
        "get_gpu_assignment",
        responses={
            "200": _ANSWER,
            "409": error("devices.yaml in deploy.override_dir cannot be read"),
        },
        tags=("deploy",),
    ),
    Route(
        "PUT",
        "/v1/gpu-assignment",
        put_assignment,
        "Write a new GPU assignment (Compose override, reference, devices.yaml); it applies "
        "when the container is restarted",
        "put_gpu_assignment",
        request_body={
            "required": True,
            "content": {"application/json": {"schema": ref("GpuAssignmentRequest")}},
        },
        responses={
            "200": _ANSWER,
            "400": error("Not JSON, or an entry the devices config rules refuse (names the key)"),
            "409": error("devices.yaml in deploy.override_dir cannot be read"),
            "503": error("deploy.override_dir cannot be written (storage_unavailable)"),
        },
        tags=("deploy",),
    ),
]
