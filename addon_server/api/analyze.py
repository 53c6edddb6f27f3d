"""``POST /v1/analyze``: one camera image → detect, re-ID, reason → a stored risk event."""

from __future__ import annotations

import json
from datetime import timedelta

from aiohttp import web

from addon_server.api.detect import UNAVAILABLE, unavailable
from addon_server.api.errors import ApiError
from addon_server.api.images import read_upload
from addon_server.api.params import aware_datetime, camera_id, risk_level
from addon_server.api.routes import (
    IMAGE_UPLOAD_ERRORS,
    RETRY_AFTER,
    STORAGE_FULL,
    Options,
    Route,
    error,
    fields,
    json_response,
    queries,
)
from addon_server.api.schemas import BOOLEAN, ZONE_MAX_LENGTH, image_body, ref
from addon_server.config import CAMERA_ID_RULE
from addon_server.imaging import ImageError
from addon_server.pipeline import AnalysisBusyError, AnalyzeRequest, utcnow
from addon_server.reasoning.context import HomeState, HomeStateError
from addon_server.reasoning.levels import RiskLevel
from addon_server.services import SERVICES_KEY, Services

ENDPOINT = "/v1/analyze"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_request(services: Services, params: dict[str, str]) -> AnalyzeRequest:
    """Validate the analyze options (form fields or query parameters); 400/404 when bad."""
    camera = params.get("camera", "").strip()
    if not camera:
        raise ApiError(400, "bad_parameter", "camera is required (an id like 'front_door')")
    camera_id(camera)
    allowed = services.settings.analysis.cameras
    if allowed and camera not in allowed:
        raise ApiError(
            404,
            "unknown_camera",
            f"camera {camera!r} is not configured; known: {', '.join(sorted(allowed))}",
        )
    timestamp = utcnow()
    raw_ts = params.get("timestamp", "").strip()
    if raw_ts:
        timestamp = aware_datetime("timestamp", raw_ts)
        now = utcnow()
        skew = services.settings.analysis.max_clock_skew_s
        if timestamp > now + timedelta(seconds=skew):
            raise ApiError(
                400,
                "bad_parameter",
                f"timestamp {raw_ts} is in the future (more than {skew:.0f} s ahead)",
            )
        max_age = timedelta(days=services.settings.store.max_age_days)
        if timestamp < now - max_age:
            raise ApiError(
                400, "bad_parameter", f"timestamp {raw_ts} is older than the retention period"
            )
    zone = params.get("zone", "").strip() or None
    if zone is not None and len(zone) > ZONE_MAX_LENGTH:
        raise ApiError(400, "bad_parameter", f"zone must be at most {ZONE_MAX_LENGTH} characters")
    raw_llm = params.get("llm", "true").strip().lower()
    if raw_llm not in _TRUE | _FALSE:
        raise ApiError(400, "bad_parameter", f"llm must be true or false, got {raw_llm!r}")
    notify_level = risk_level("notify_level", params.get("notify_level", RiskLevel.HIGH))
    home = home_state(params.get("home_state", "").strip())
    return AnalyzeRequest(camera, timestamp, zone, raw_llm in _TRUE, notify_level, home)


def home_state(raw: str) -> HomeState | None:
    """The ``home_state`` option: a JSON object (see the HomeState schema), or absent.

    Home Assistant sends what the user's alarm, presence, door, lock and guest entities say;
    a value the rules cannot read is refused with the key named rather than ignored, because
    a silently dropped "alarm armed away" would lower every score of that home.
    """
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise ApiError(400, "bad_parameter", f"home_state is not valid JSON: {err}") from None
    try:
        return HomeState.from_json(value)
    except HomeStateError as err:
        raise ApiError(400, "bad_parameter", str(err)) from None


async def analyze(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    data, declared, fields = await read_upload(request, services.settings.server.max_body_bytes)
    options = parse_request(services, {**fields, **request.query})
    try:
        # The pipeline decodes inside its admission slot: pixels exist only while one is held.
        event = await services.analyzer.analyze(options, data, declared)
    except ImageError as err:
        raise ApiError(err.status, err.code, str(err)) from None
    except AnalysisBusyError as err:
        raise ApiError(429, "busy", str(err), {"Retry-After": str(err.retry_after)}) from None
    except UNAVAILABLE as err:
        raise unavailable(err) from None
    return web.json_response(event)


OPTIONS: Options = {
    "camera": (f"Camera id ({CAMERA_ID_RULE}); required", ref("CameraId")),
    "timestamp": (
        "When the image was taken, ISO 8601 with offset (default now)",
        {"type": "string", "format": "date-time"},
    ),
    "zone": ("Optional zone name", {"type": "string", "maxLength": ZONE_MAX_LENGTH}),
    "llm": ("Use the LLM (default true); false scores with the rules only", BOOLEAN),
    "notify_level": (
        "Level from which the event is marked notify (default high)",
        ref("RiskLevel"),
    ),
    "home_state": (
        "The home's state as a JSON object (alarm, people_home, household_present, doors_open,"
        " unlocked, guests_expected; all optional): evidence the rules score",
        {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": ref("HomeState"),
        },
    ),
}

ROUTES = [
    Route(
        "POST",
        ENDPOINT,
        analyze,
        "Analyse one camera image into a stored risk event",
        "analyze",
        parameters=queries(OPTIONS),
        request_body=image_body(fields(OPTIONS)),
        responses={
            "200": json_response("The stored event", "Event"),
            "400": error("Bad image or bad parameter (camera, timestamp, ...)"),
            "404": error("Camera not configured"),
            **IMAGE_UPLOAD_ERRORS,
            "429": error(
                "Too many analyses waiting (busy) or the detection queue full (queue_full); "
                "see Retry-After",
                RETRY_AFTER,
            ),
            "503": error("Detector not installed, or the data dir unavailable"),
            "507": STORAGE_FULL,
        },
        tags=("analysis",),
    )
]
