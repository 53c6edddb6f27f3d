"""``GET /openapi.json``, generated from the route table so it cannot drift from the router."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from addon_server import __version__
from addon_server.api import schemas
from addon_server.api.routes import UNAUTHORIZED, Route, json_response

SPEC_KEY = web.AppKey("openapi", dict)


def build_spec(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``, with the contract's schemas as components."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not route.responses:
            raise ValueError(f"{route.method} {route.path} documents no response")
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "tags": list(route.tags),
            "responses": dict(route.responses),
        }
        if route.parameters:
            operation["parameters"] = list(route.parameters)
        if route.request_body is not None:
            operation["requestBody"] = route.request_body
        if route.auth:
            operation["responses"].setdefault("401", UNAUTHORIZED)
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
        "components": {
            "schemas": schemas.components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
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
        responses={"200": json_response("OpenAPI 3.1 document", "OpenApiDocument")},
        tags=("ops",),
    ),
]
