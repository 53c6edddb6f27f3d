"""``GET /openapi.json``, generated from the route table so it cannot drift from the router."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from addon_server import __version__
from addon_server.api.routes import Route, error, json_response

SPEC_KEY = web.AppKey("openapi", dict)


def build_spec(routes: Sequence[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "tags": list(route.tags),
            "responses": dict(route.responses) or {"200": json_response("OK")},
        }
        if route.parameters:
            operation["parameters"] = list(route.parameters)
        if route.request_body is not None:
            operation["requestBody"] = route.request_body
        if route.auth:
            operation["responses"].setdefault("401", error("Missing or invalid bearer token"))
        else:
            operation["security"] = []
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Vigil add-on",
            "version": __version__,
            "description": "Object detection and risk reasoning for Home Assistant cameras.",
            "license": {"name": "AGPL-3.0-or-later"},
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[SPEC_KEY])


ROUTES = [
    Route(
        "GET",
        "/openapi.json",
        openapi,
        "This OpenAPI document",
        "openapi",
        responses={"200": json_response("OpenAPI 3.1 document")},
        tags=("ops",),
    ),
]
