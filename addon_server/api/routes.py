"""One table of routes: the router and /openapi.json are both built from it, so they agree."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from addon_server.api.errors import Handler

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


@dataclass(frozen=True, slots=True)
class Route:
    """A route and the facts its OpenAPI operation states."""

    method: str
    path: str
    handler: Handler
    summary: str
    operation_id: str
    auth: bool = True
    parameters: tuple[dict[str, Any], ...] = ()
    request_body: dict[str, Any] | None = None
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


def json_response(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


def error(description: str) -> dict[str, Any]:
    return json_response(description, ERROR_SCHEMA)


def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }
