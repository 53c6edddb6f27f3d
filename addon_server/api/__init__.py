"""The HTTP API: one module per resource, all routes registered here in one place."""

from __future__ import annotations

from aiohttp import web

from addon_server.api import (
    analyze,
    detect,
    enrich,
    events,
    gpu,
    health,
    models,
    openapi,
    people,
    stream,
)
from addon_server.api.routes import Route

ALL_ROUTES: list[Route] = [
    *health.ROUTES,
    *detect.ROUTES,
    *analyze.ROUTES,
    *stream.ROUTES,  # before events: /v1/events/stream is not an event id
    *events.ROUTES,
    *people.ROUTES,
    *models.ROUTES,
    *enrich.ROUTES,
    *gpu.ROUTES,
    *openapi.ROUTES,
]


def register(app: web.Application, routes: list[Route] | None = None) -> None:
    """Add every route to ``app`` and publish the matching OpenAPI document."""
    chosen = ALL_ROUTES if routes is None else routes
    for route in chosen:
        app.router.add_route(route.method, route.path, route.handler)
    app[openapi.SPEC_KEY] = openapi.build_spec(chosen)
