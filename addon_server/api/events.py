"""``GET /v1/events``, ``GET /v1/events/{id}`` and the annotated snapshot."""

from __future__ import annotations

from aiohttp import web

from addon_server.api.errors import ApiError
from addon_server.api.params import aware_datetime, camera_id, risk_level
from addon_server.api.routes import (
    STORAGE_UNAVAILABLE,
    Route,
    error,
    json_response,
    path_param,
    query,
)
from addon_server.api.schemas import BINARY, ref
from addon_server.services import SERVICES_KEY

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


def _since(raw: str) -> float:
    try:
        return float(raw)  # Unix seconds
    except ValueError:
        return aware_datetime("since", raw).timestamp()


async def list_events(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    params = request.query
    camera = params.get("camera") or None
    if camera is not None:
        camera_id(camera)
    since = _since(params["since"]) if params.get("since") else None
    raw_level = params.get("min_level")
    min_level = risk_level("min_level", raw_level) if raw_level else None
    raw_limit = params.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        raise ApiError(
            400, "bad_parameter", f"limit must be an integer, got {raw_limit!r}"
        ) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "bad_parameter", f"limit must be between 1 and {MAX_LIMIT}")
    events = await services.store.list_events(
        camera=camera, since=since, min_level=min_level, limit=limit
    )
    return web.json_response({"events": events})


async def get_event(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    event = await services.store.get_event(request.match_info["event_id"])
    if event is None:
        raise ApiError(404, "unknown_event", f"no event {request.match_info['event_id']!r}")
    return web.json_response(event)


async def get_snapshot(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    snapshot = await services.store.get_snapshot(request.match_info["event_id"])
    if snapshot is None:
        raise ApiError(404, "unknown_event", f"no snapshot for {request.match_info['event_id']!r}")
    return web.Response(
        body=snapshot,
        content_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=86400, immutable"},
    )


EVENT_ID = path_param("event_id", "Event id", ref("Id"))

ROUTES = [
    Route(
        "GET",
        "/v1/events",
        list_events,
        "Stored events, newest first",
        "list_events",
        parameters=(
            query("camera", "Only this camera", ref("CameraId")),
            query(
                "since",
                "Only events at or after this time (ISO 8601 with offset, or Unix seconds)",
                {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]},
            ),
            query("min_level", "Only events at or above this level", ref("RiskLevel")),
            query(
                "limit",
                f"At most this many (1-{MAX_LIMIT}, default {DEFAULT_LIMIT})",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            ),
        ),
        responses={
            "200": json_response("Events", "EventList"),
            "400": error("Bad filter"),
            "503": STORAGE_UNAVAILABLE,
        },
        tags=("events",),
    ),
    Route(
        "GET",
        "/v1/events/{event_id}",
        get_event,
        "One stored event",
        "get_event",
        parameters=(EVENT_ID,),
        responses={
            "200": json_response("The event", "Event"),
            "404": error("Unknown event"),
            "503": STORAGE_UNAVAILABLE,
        },
        tags=("events",),
    ),
    Route(
        "GET",
        "/v1/events/{event_id}/snapshot.jpg",
        get_snapshot,
        "The event's annotated snapshot (boxes and labels)",
        "get_snapshot",
        parameters=(EVENT_ID,),
        responses={
            "200": {
                "description": "JPEG",
                "content": {"image/jpeg": {"schema": BINARY}},
            },
            "404": error("Unknown event"),
            "503": STORAGE_UNAVAILABLE,
        },
        tags=("events",),
    ),
]
