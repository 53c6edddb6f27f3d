"""One table of routes: the router and /openapi.json are both built from it, so they agree.

Every response a route documents names a schema of :mod:`addon_server.api.schemas`; there is no
default "some object", so a route cannot be published without saying what it answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from addon_server.api.errors import Handler
from addon_server.api.schemas import STRING, JsonSchema, ref


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


def header(description: str, schema: JsonSchema) -> dict[str, Any]:
    """A response header that is always sent with that response."""
    return {"description": description, "required": True, "schema": schema}


RETRY_AFTER = {"Retry-After": header("Seconds to wait before retrying", {"type": "integer"})}
WWW_AUTHENTICATE = {"WWW-Authenticate": header("The bearer challenge", STRING)}


def json_response(
    description: str, schema: str, headers: Mapping[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A JSON response whose body is the contract's schema ``schema``."""
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ref(schema)}},
    }
    if headers:
        response["headers"] = dict(headers)
    return response


def error(description: str, headers: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """An error response: the one JSON error shape."""
    return json_response(description, "Error", headers)


UNAUTHORIZED = error("Missing or invalid bearer token", WWW_AUTHENTICATE)
IMAGE_UPLOAD_ERRORS = {
    "413": error("Body or image too large"),
    "415": error("Unsupported content type"),
}
"""What every route taking an image body answers for an oversized or non-image upload."""
STORAGE_UNAVAILABLE = error("The data dir is read-only or failing (storage_unavailable)")
STORAGE_FULL = error("No space left in the data dir; nothing was stored (storage_full)")


def query(name: str, description: str, schema: JsonSchema) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


Options = Mapping[str, tuple[str, JsonSchema]]
"""Request options by name: (description, schema). Upload routes take each option as a query
parameter or as a multipart field (the handler merges both), so one table documents both."""


def queries(options: Options) -> tuple[dict[str, Any], ...]:
    return tuple(
        query(name, description, schema) for name, (description, schema) in options.items()
    )


def fields(options: Options) -> dict[str, JsonSchema]:
    return {name: schema for name, (_, schema) in options.items()}


def path_param(name: str, description: str, schema: JsonSchema = STRING) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }
