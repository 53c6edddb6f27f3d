"""``GET /health`` (open, shaped like the seed services' health JSON) and ``GET /metrics``."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from addon_server import __version__
from addon_server.api.gpu import restart_issues
from addon_server.api.routes import Route, json_response
from addon_server.services import SERVICES_KEY, Services


async def health_document(services: Services) -> dict[str, Any]:
    """Build the health JSON; ``issues`` lists what Home Assistant turns into repairs.

    Each issue has a ``severity``: ``warning`` for what degrades the service, ``info`` for
    what the user should know but need not fix (running on the CPU alone).
    """
    devices = services.devices
    models = services.models()
    detector = models[0]  # the detector comes first
    issues: list[dict[str, Any]] = []
    for placement in devices.placements.values():
        if placement.fallback and placement.service in _RUNNING_SERVICES:
            issues.append(
                {
                    "code": "service_fallback",
                    "service": placement.service,
                    "message": f"{placement.reason}; {placement.service} runs on "
                    f"{placement.device}",
                }
            )
    if not detector["installed"]:
        issues.append(
            {
                "code": "model_not_installed",
                "model": detector["name"],
                "message": str(detector["error"]),
            }
        )
    if not services.reid.installed and services.settings.reid.enabled:
        issues.append(
            {
                "code": "model_not_installed",
                "model": services.settings.reid.embedder,
                "message": str(services.reid.load_error),
            }
        )
    issues.extend(services.detection.issues())
    registry = services.detection.model_registry  # shared by the detector and the zoo
    if registry is not None:
        issues.extend(registry.issues())  # models served from the cache, or not at all
    for model in models:
        if model["kind"] == "zoo" and model["state"] == "failed":
            issues.append(
                {
                    "code": "zoo_model_failed",
                    "model": model["name"],
                    "message": f"{model['name']} failed to load: {model['error']}; analyses "
                    "go on without it",
                }
            )
    issues.extend(services.reasoner.issues())
    issues.extend(services.store.issues())
    if not detector["loaded"]:
        status = "unhealthy"
    elif issues:
        status = "degraded"
    else:
        status = "healthy"
    issues = [{**issue, "severity": "warning"} for issue in issues]
    cuda = any(d.kind == "cuda" and d.present for d in devices.devices.values())
    if not cuda and not any(issue["code"] == "service_fallback" for issue in issues):
        # Information, not a fault: it does not degrade the status. A GPU the
        # configuration asked for and did not get is a service_fallback warning instead.
        issues.append(
            {
                "code": "cpu_only",
                "severity": "info",
                "message": "no CUDA GPU is present: every model runs on the CPU, which is "
                "much slower than on a GPU",
            }
        )
    issues.extend(restart_issues(services))  # information: the status stays as it is
    batcher = services.detection.batcher
    return {
        "status": status,
        "version": __version__,
        "instance_id": services.instance_id,
        "uptime_seconds": round(time.monotonic() - services.started, 1),
        "cuda_available": cuda,
        "model_loaded": bool(detector["loaded"]),
        "devices": devices.as_health(),
        "services": devices.placements_as_health(),
        "models": models,
        "llm": await services.reasoner.health(),
        "privacy": dataclasses.asdict(services.settings.privacy),
        "batcher": {
            "queue_depth": batcher.queue_depth,
            "requests": batcher.stats.requests,
            "batches": batcher.stats.batches,
            "rejected": batcher.stats.rejected,
            "max_batch_size": batcher.max_batch_size,
            "autotune_ms_per_image": services.detection.tuning.ms_per_image
            if services.detection.tuning is not None
            else None,
        }
        if batcher is not None
        else None,
        "issues": issues,
    }


_RUNNING_SERVICES = frozenset({"detector", "llm", "zoo"})
"""Services this build runs; placements of the others are reported but raise no issue yet."""


async def health(request: web.Request) -> web.Response:
    return web.json_response(await health_document(request.app[SERVICES_KEY]))


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    m = services.metrics
    for device in services.devices.as_health():
        m.device_budget.labels(device["id"]).set(device["budget_bytes"])
        m.device_used.labels(device["id"]).set(device["used_bytes"])
    if services.detection.batcher is not None:
        m.queue_depth.set(services.detection.batcher.queue_depth)
    triton = services.detection.triton_health()
    if triton is not None:
        model, stats = triton["model"], triton["statistics"]
        m.triton_up.labels(model).set(1 if triton["error"] is None else 0)
        m.triton_inferences.labels(model).set(stats["inference_count"])
        m.triton_executions.labels(model).set(stats["execution_count"])
        m.triton_queue_seconds.labels(model).set(stats["queue_seconds"])
        m.triton_compute_seconds.labels(model).set(stats["compute_seconds"])
        m.triton_retries.labels(model).set(triton["retries"])
        m.triton_failures.labels(model).set(triton["failures"])
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


ROUTES = [
    Route(
        "GET",
        "/health",
        health,
        "Service health, devices, placement and models",
        "health",
        auth=False,
        responses={"200": json_response("Health document", "Health")},
        tags=("ops",),
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        "metrics",
        responses={
            "200": {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
        tags=("ops",),
    ),
]
