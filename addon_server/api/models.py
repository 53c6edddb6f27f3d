"""``/v1/models`` and ``/v1/zoo/status``: what is loaded where, and loading, unloading and
pinning models on demand.

Every served model — the detector, the face embedder, the LLM server and each zoo model — is
one entry of one list (``Services.served``), so these handlers never ask which kind a model is:
the detector and the LLM refuse an unload themselves (409 ``not_unloadable``), a model whose
weights are absent answers 409 ``model_not_installed`` naming the path, and a zoo model that
cannot get memory in time answers 503 ``zoo_busy`` with ``Retry-After``.
"""

from __future__ import annotations

from aiohttp import web

from addon_server.api.errors import ApiError
from addon_server.api.routes import RETRY_AFTER, Route, error, json_response, path_param, query
from addon_server.api.schemas import BOOLEAN
from addon_server.detector.service import ReloadError
from addon_server.errors import ModelNotInstalledError
from addon_server.served import NotUnloadableError, ServedModel
from addon_server.services import SERVICES_KEY, Services
from addon_server.zoo.interface import ModelLoadError, ZooBusyError

ZOO_BUSY_RETRY_S = 5


def _find(services: Services, name: str) -> ServedModel:
    served = services.served()
    for model in served:
        if model.name == name:
            return model
    known = ", ".join(m.name for m in served)
    raise ApiError(404, "unknown_model", f"no model {name!r}; known: {known}")


def zoo_error(err: Exception) -> ApiError:
    """The API error for a zoo failure (shared by the enrich endpoints)."""
    if isinstance(err, ZooBusyError):
        return ApiError(
            503, "zoo_busy", f"{err.reason}: {err}", {"Retry-After": str(ZOO_BUSY_RETRY_S)}
        )
    if isinstance(err, ModelNotInstalledError):
        return ApiError(409, "model_not_installed", str(err))
    if isinstance(err, ModelLoadError):
        return ApiError(503, "model_load_failed", str(err))
    raise err


async def list_models(request: web.Request) -> web.Response:
    return web.json_response({"models": request.app[SERVICES_KEY].models()})


def _pin(request: web.Request) -> bool | None:
    raw = request.query.get("pin")
    if raw in (None, ""):
        return None
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, "bad_parameter", f"pin must be true or false, got {raw!r}")


async def load_model(request: web.Request) -> web.Response:
    model = _find(request.app[SERVICES_KEY], request.match_info["name"])
    pin = _pin(request)
    try:
        await model.load(pin=pin)
    except (ZooBusyError, ModelNotInstalledError, ModelLoadError) as err:
        raise zoo_error(err) from None
    return web.json_response(model.info().as_json())


async def unload_model(request: web.Request) -> web.Response:
    model = _find(request.app[SERVICES_KEY], request.match_info["name"])
    try:
        await model.unload()
    except NotUnloadableError as err:
        raise ApiError(409, "not_unloadable", str(err)) from None
    return web.json_response(model.info().as_json())


async def reload_detector(request: web.Request) -> web.Response:
    """Roll the detector to the version its registry alias points at now (no restart)."""
    try:
        answer = await request.app[SERVICES_KEY].detection.reload()
    except ReloadError as err:
        raise ApiError(err.status, err.code, str(err)) from None
    return web.json_response(answer)


async def zoo_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICES_KEY].zoo.status())


_NAME = path_param("name", "Model name")
ROUTES = [
    Route(
        "GET",
        "/v1/models",
        list_models,
        "Every served model: where it runs, its state, priority and measured bytes",
        "list_models",
        responses={"200": json_response("Models", "ModelList")},
        tags=("models",),
    ),
    Route(
        "POST",
        "/v1/models/{name}/load",
        load_model,
        "Load a model (a zoo model may be pinned: never evicted or idle-unloaded)",
        "load_model",
        parameters=(
            _NAME,
            query("pin", "Pin (true) or unpin (false) the model; default: leave as is", BOOLEAN),
        ),
        responses={
            "200": json_response("The model", "Model"),
            "400": error("Bad pin value"),
            "404": error("Unknown model"),
            "409": error("Model not installed"),
            "503": error("No memory could be freed in time (zoo_busy) or the load failed"),
        },
        tags=("models",),
    ),
    Route(
        "POST",
        "/v1/models/{name}/unload",
        unload_model,
        "Unload a model (a zoo model in use goes when its last call ends)",
        "unload_model",
        parameters=(_NAME,),
        responses={
            "200": json_response("The model", "Model"),
            "404": error("Unknown model"),
            "409": error("The model cannot be unloaded"),
        },
        tags=("models",),
    ),
    Route(
        "POST",
        "/v1/models/detector/reload",
        reload_detector,
        "Resolve the detector's models:/ alias again; when it moved, load the new version "
        "beside the old one, warm it up and swap (queued requests finish on the old one)",
        "reload_detector",
        responses={
            "200": json_response("The version served now", "DetectorReload"),
            "409": error(
                "Not a registry detector (not_from_registry, not_reloadable) or a reload is "
                "running (reload_in_progress)"
            ),
            "503": error(
                "The registry cannot be reached and nothing is cached (registry_unavailable) "
                "or the new version failed to load (reload_failed); the old one is still served"
            ),
        },
        tags=("models",),
    ),
    Route(
        "GET",
        "/v1/zoo/status",
        zoo_status,
        "The model zoo per device: budget, use, loaded and pending models",
        "zoo_status",
        responses={"200": json_response("Zoo status", "ZooStatus")},
        tags=("models",),
    ),
]
ZOO_RETRY_AFTER = RETRY_AFTER
