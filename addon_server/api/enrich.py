"""``POST /v1/enrich`` and the seeds' single-model endpoints (``/v1/pose-analyze``, …).

``/v1/enrich`` takes an image and, optionally, the detections a caller already has (a JSON
list in the ``detections`` field, boxes in the upload's pixels); without them the add-on's own
detector runs first. It then runs what the detections trigger (or the models named in
``models``) through the zoo, and answers with each result, each skipped model with its reason,
and the time each took. The light endpoints run one model each and answer that model's result.

Frames are decoded at the analysis' working size (``analysis.max_side``); enrichment boxes are
in the pixels of that frame, whose size the answer reports as ``image``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from addon_server.api.detect import unavailable
from addon_server.api.errors import ApiError
from addon_server.api.images import decode_upload, read_upload
from addon_server.api.models import zoo_error
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
from addon_server.api.schemas import STRING, image_body
from addon_server.detector.base import Detection, clip_box
from addon_server.detector.batcher import BatcherClosedError, QueueFullError
from addon_server.detector.service import DetectorUnavailableError
from addon_server.errors import ModelNotInstalledError
from addon_server.imaging import DecodedImage
from addon_server.services import SERVICES_KEY, Services
from addon_server.zoo.interface import Frame, ModelLoadError, ZooBusyError, in_pixels
from addon_server.zoo.service import UnknownModelError

MAX_DETECTIONS = 100


def _parse_detections(raw: str, image: DecodedImage) -> tuple[Detection, ...]:
    """The caller's detections (upload pixels) as detections in the decoded frame's pixels."""
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ApiError(400, "bad_parameter", f"detections is not JSON: {err}") from None
    if not isinstance(items, list) or len(items) > MAX_DETECTIONS:
        raise ApiError(
            400, "bad_parameter", f"detections must be a JSON list of at most {MAX_DETECTIONS}"
        )
    sx, sy = image.to_original()
    height, width = image.pixels.shape[:2]
    out = []
    for index, item in enumerate(items):
        try:
            box = item["bbox"]
            name = str(item["class"])
            confidence = float(item.get("confidence", 1.0))
            x, y = float(box["x"]) / sx, float(box["y"]) / sy
            w, h = float(box["width"]) / sx, float(box["height"]) / sy
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ApiError(
                400,
                "bad_parameter",
                f"detections[{index}] must be {{'class', 'confidence', 'bbox': "
                "{'x', 'y', 'width', 'height'}}",
            ) from None
        if not 0.0 <= confidence <= 1.0 or w <= 0 or h <= 0:
            raise ApiError(400, "bad_parameter", f"detections[{index}] has an empty box")
        bx, by, bw, bh = clip_box(x, y, x + w, y + h, width, height)
        if bw > 0 and bh > 0:
            out.append(Detection(name, confidence, bx, by, bw, bh))
    return tuple(out)


async def _detected(services: Services, image: DecodedImage) -> tuple[Detection, ...]:
    """The add-on's own detections, in the decoded frame's pixels."""
    detection = services.detection
    try:
        result = await detection.detect(image, detection.selection())
    except (QueueFullError, DetectorUnavailableError, BatcherClosedError) as err:
        raise unavailable(err) from None
    return tuple(d for d in in_pixels(result.detections, image) if d.width and d.height)


async def _frame(request: web.Request) -> tuple[Frame, dict[str, str], float]:
    services = request.app[SERVICES_KEY]
    data, declared, form = await read_upload(request, services.settings.server.max_body_bytes)
    params = {**form, **request.query}
    started = time.perf_counter()
    image = await decode_upload(
        data,
        declared,
        services.settings.images.max_pixels,
        max_side=services.settings.analysis.max_side,
    )
    raw = params.get("detections")
    if raw not in (None, ""):
        detections = _parse_detections(str(raw), image)
    else:
        detections = await _detected(services, image)
    camera = params.get("camera") or None
    return Frame(image.pixels, detections, camera), params, started


def _image(frame: Frame) -> dict[str, int]:
    height, width = frame.pixels.shape[:2]
    return {"width": int(width), "height": int(height)}


async def enrich(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    frame, params, started = await _frame(request)
    detect_ms = (time.perf_counter() - started) * 1000
    models = None
    raw_models = params.get("models")
    if raw_models not in (None, ""):
        models = [m.strip() for m in str(raw_models).split(",") if m.strip()]
        for name in models:
            try:
                services.zoo.manager_for(name)
            except UnknownModelError as err:
                raise ApiError(404, "unknown_model", str(err.args[0])) from None
    outcome = await services.zoo.enrich(frame, models)
    return web.json_response(
        {
            "detections": [d.as_json() for d in frame.detections],
            "image": _image(frame),
            "enrichments": outcome.as_json(),
            "timings_ms": {
                "detect": round(detect_ms, 1),
                **{f"enrich_{k}": round(v, 1) for k, v in outcome.timings_ms.items()},
            },
        }
    )


def _single(model: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        services = request.app[SERVICES_KEY]
        frame, _params, _started = await _frame(request)
        started = time.perf_counter()
        try:
            result = await services.zoo.run(model, frame)
        except UnknownModelError as err:
            raise ApiError(404, "unknown_model", str(err.args[0])) from None
        except (ZooBusyError, ModelNotInstalledError, ModelLoadError) as err:
            raise zoo_error(err) from None
        # A model may have a fuller answer than the one events store (embedding vectors).
        full = getattr(result, "as_full_json", result.as_json)
        body = {
            **full(),
            "model": model,
            "image": _image(frame),
            "inference_time_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        return web.json_response(body)

    handler.__name__ = f"run_{model}"
    return handler


OPTIONS: Options = {
    "detections": (
        "JSON list of {class, confidence, bbox: {x, y, width, height}} in the upload's pixels; "
        "default: the add-on's detector runs",
        STRING,
    ),
    "camera": ("The camera id (multi-frame models remember per camera)", STRING),
}
ENRICH_OPTIONS: Options = {
    **OPTIONS,
    "models": ("Comma-separated zoo models to run; default: what the detections trigger", STRING),
}
_ERRORS = {
    "400": error("Empty, corrupt or non-image body, or bad detections"),
    **IMAGE_UPLOAD_ERRORS,
    "429": error("Detector queue full; see Retry-After", RETRY_AFTER),
}
_MODEL_ERRORS = {
    **_ERRORS,
    "404": error("Unknown model"),
    "409": error("Model not installed (the message names the expected path)"),
    "503": error("No memory freed in time (zoo_busy, see Retry-After) or the load failed"),
}

LIGHT_ENDPOINTS = {
    "/v1/pose-analyze": ("pose", "Keypoints, posture and alerts per person"),
    "/v1/threat-detect": ("threat_detector", "Weapons and other threats"),
    "/v1/reid-embed": ("person_reid", "Body appearance embeddings per person"),
    "/v1/pet-classify": ("pet_classifier", "Cat or dog, breed, household pet or not"),
    "/v1/depth-estimate": ("depth_estimator", "Depth map (base64 PNG) with min/max/mean"),
}

ROUTES = [
    Route(
        "POST",
        "/v1/enrich",
        enrich,
        "Run the zoo models an image's detections trigger (or those named)",
        "enrich",
        parameters=queries(ENRICH_OPTIONS),
        request_body=image_body(fields(ENRICH_OPTIONS)),
        responses={
            "200": json_response("Detections and enrichments", "EnrichResult"),
            **_ERRORS,
            "404": error("Unknown model"),
            "503": error("Detector not installed or not loaded"),
        },
        tags=("enrichment",),
    ),
    *(
        Route(
            "POST",
            path,
            _single(model),
            summary,
            path.rsplit("/", 1)[1].replace("-", "_"),
            parameters=queries(OPTIONS),
            request_body=image_body(fields(OPTIONS)),
            responses={"200": json_response(summary, "ModelResult"), **_MODEL_ERRORS},
            tags=("enrichment",),
        )
        for path, (model, summary) in LIGHT_ENDPOINTS.items()
    ),
]
