"""``GET /v1/events``, ``GET /v1/events/{id}``, the annotated snapshot and the user's feedback.

Feedback (``POST``/``DELETE /v1/events/{id}/feedback``) is the user's verdict on one event; the
store keeps it and the camera's later events are calibrated by it
(:mod:`addon_server.reasoning.calibration`).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from addon_server.api.errors import ApiError
from addon_server.api.params import aware_datetime, bad, camera_id, risk_level
from addon_server.api.routes import (
    STORAGE_FULL,
    STORAGE_UNAVAILABLE,
    Route,
    error,
    json_response,
    path_param,
    query,
)
from addon_server.api.schemas import (
    BINARY,
    FEEDBACK_NOTE_MAX_LENGTH,
    SCHEMAS,
    WITHDRAW_VERDICT,
    ref,
)
from addon_server.reasoning.calibration import Verdict
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


_FEEDBACK_KEYS = tuple(SCHEMAS["FeedbackRequest"]["properties"])
_VERDICTS = (*(str(v) for v in Verdict), WITHDRAW_VERDICT)


async def _feedback_body(request: web.Request) -> tuple[Verdict | None, str | None]:
    """The request's verdict (``None``: withdraw) and note; a 400 naming the field if bad."""
    try:
        body: Any = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_json", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    if unknown := sorted(set(body) - set(_FEEDBACK_KEYS)):
        raise bad(f"{unknown[0]}: unknown key (expected {' or '.join(_FEEDBACK_KEYS)})")
    raw = body.get("verdict")
    if raw not in _VERDICTS:
        expected = f"{', '.join(_VERDICTS[:-1])} or {_VERDICTS[-1]}"
        got = "nothing" if raw is None else repr(raw)
        raise bad(f"verdict must be {expected}, got {got}")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > FEEDBACK_NOTE_MAX_LENGTH):
        raise bad(f"note must be a string of at most {FEEDBACK_NOTE_MAX_LENGTH} characters")
    return (None if raw == WITHDRAW_VERDICT else Verdict(raw)), note


async def _answer_feedback(
    request: web.Request, verdict: Verdict | None, note: str | None
) -> web.Response:
    event_id = request.match_info["event_id"]
    event = await request.app[SERVICES_KEY].store.set_feedback(event_id, verdict, note)
    if event is None:
        raise ApiError(404, "unknown_event", f"no event {event_id!r}")
    return web.json_response(event)


async def post_feedback(request: web.Request) -> web.Response:
    verdict, note = await _feedback_body(request)
    return await _answer_feedback(request, verdict, note)


async def delete_feedback(request: web.Request) -> web.Response:
    return await _answer_feedback(request, None, None)


_FEEDBACK_ERRORS = {
    "404": error("Unknown event"),
    "503": STORAGE_UNAVAILABLE,
    "507": STORAGE_FULL,
}
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
    Route(
        "POST",
        "/v1/events/{event_id}/feedback",
        post_feedback,
        "Give (or replace) the user's verdict on an event; it calibrates the camera",
        "post_feedback",
        parameters=(EVENT_ID,),
        request_body={
            "required": True,
            "content": {"application/json": {"schema": ref("FeedbackRequest")}},
        },
        responses={
            "200": json_response("The event with its feedback", "Event"),
            "400": error("Not a JSON object, or a bad verdict or note (names the field)"),
            **_FEEDBACK_ERRORS,
        },
        tags=("events",),
    ),
    Route(
        "DELETE",
        "/v1/events/{event_id}/feedback",
        delete_feedback,
        "Withdraw the user's verdict on an event",
        "delete_feedback",
        parameters=(EVENT_ID,),
        responses={
            "200": json_response("The event, without feedback", "Event"),
            **_FEEDBACK_ERRORS,
        },
        tags=("events",),
    ),
]
