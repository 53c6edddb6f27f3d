"""``POST /v1/detect``: one image in, the security-relevant objects in it out."""

from __future__ import annotations

import time

from aiohttp import web

from addon_server.api.errors import ApiError
from addon_server.api.images import decode_upload, read_upload
from addon_server.api.routes import (
    IMAGE_UPLOAD_ERRORS,
    RETRY_AFTER,
    Options,
    Route,
    error,
    fields,
    json_response,
    queries,
)
from addon_server.api.schemas import PROBABILITY, STRING, image_body
from addon_server.detector.base import Selection
from addon_server.detector.batcher import BatcherClosedError, QueueFullError
from addon_server.detector.service import (
    DetectionService,
    DetectorUnavailableError,
    InvalidSelectionError,
)
from addon_server.errors import BackendUnavailableError
from addon_server.services import SERVICES_KEY

ENDPOINT = "/v1/detect"
UNAVAILABLE = (
    QueueFullError,
    DetectorUnavailableError,
    BatcherClosedError,
    BackendUnavailableError,
)
"""The detect stage's failures that are the server's state, not the request's: 429 or 503."""


def parse_selection(detection: DetectionService, params: dict[str, str]) -> Selection:
    """Turn ``confidence`` and ``classes`` request options into a Selection (400 when bad)."""
    confidence: float | None = None
    raw_conf = params.get("confidence")
    if raw_conf not in (None, ""):
        try:
            confidence = float(raw_conf)
        except ValueError:
            raise ApiError(
                400, "bad_parameter", f"confidence must be a number, got {raw_conf!r}"
            ) from None
    raw_classes = params.get("classes")
    classes = None
    if raw_classes not in (None, ""):
        classes = [c.strip() for c in raw_classes.split(",") if c.strip()]
    try:
        return detection.selection(confidence, classes)
    except InvalidSelectionError as err:
        raise ApiError(400, "bad_parameter", str(err)) from None


def unavailable(err: Exception) -> ApiError:
    if isinstance(err, QueueFullError):
        return ApiError(429, "queue_full", str(err), {"Retry-After": str(err.retry_after)})
    if isinstance(err, BackendUnavailableError):
        return ApiError(503, err.code, str(err))
    if isinstance(err, DetectorUnavailableError):
        return ApiError(503, "model_not_installed", str(err))
    return ApiError(503, "unavailable", str(err))


async def detect(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    metrics = services.metrics
    started = time.perf_counter()
    status = "error"
    try:
        data, declared, fields = await read_upload(request, services.settings.server.max_body_bytes)
        selection = parse_selection(services.detection, {**fields, **request.query})
        # Detection alone never needs more pixels than the network's input.
        image = await decode_upload(
            data,
            declared,
            services.settings.images.max_pixels,
            min_side=services.settings.detector.input_size,
        )
        try:
            result = await services.detection.detect(image, selection)
        except UNAVAILABLE as err:
            raise unavailable(err) from None
        status = "success"
        return web.json_response(result.as_json())
    finally:
        metrics.requests.labels(ENDPOINT, status).inc()
        metrics.latency.labels(ENDPOINT).observe(time.perf_counter() - started)


OPTIONS: Options = {
    "confidence": (
        "Minimum confidence for every class (0-1); overrides the configured per-class thresholds",
        PROBABILITY,
    ),
    "classes": ("Comma-separated class names; default: the security classes", STRING),
}

ROUTES = [
    Route(
        "POST",
        ENDPOINT,
        detect,
        "Detect security-relevant objects in one image",
        "detect",
        parameters=queries(OPTIONS),
        request_body=image_body(fields(OPTIONS)),
        responses={
            "200": json_response("Detections", "DetectResult"),
            "400": error("Empty, corrupt or non-image body, or a bad parameter"),
            **IMAGE_UPLOAD_ERRORS,
            "429": error("Queue full; see Retry-After", RETRY_AFTER),
            "503": error("Detector not installed or not loaded, or its Triton server unavailable"),
        },
        tags=("detection",),
    )
]
