"""``/v1/models``: what is loaded where, and loading/unloading models on demand.

The detector is always resident (the add-on exists to detect); the face embedder can be
unloaded to give its device budget back and loaded again. The model zoo's enrichment models
will join this list through the same handlers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from addon_server.api.errors import ApiError
from addon_server.api.routes import Route, error, json_response, path_param
from addon_server.reid.gallery import LEDGER_OWNER
from addon_server.services import SERVICES_KEY, Services


def _find(services: Services, name: str) -> dict[str, Any]:
    for model in services.models():
        if model["name"] == name:
            return model
    known = ", ".join(m["name"] for m in services.models())
    raise ApiError(404, "unknown_model", f"no model {name!r}; known: {known}")


async def list_models(request: web.Request) -> web.Response:
    return web.json_response({"models": request.app[SERVICES_KEY].models()})


async def load_model(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    model = _find(services, request.match_info["name"])
    if model["kind"] == "face_embedder":
        reid = services.reid
        if not await asyncio.to_thread(reid.load):
            raise ApiError(409, "model_not_installed", reid.load_error or "not installed")
        assert reid.embedder is not None
        device = services.devices.device_for("zoo")
        services.devices.reserve(device, LEDGER_OWNER, reid.embedder.memory_bytes)
    elif not model["loaded"]:
        raise ApiError(409, "model_not_installed", str(model["error"]))
    return web.json_response(_find(services, model["name"]))


async def unload_model(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    model = _find(services, request.match_info["name"])
    if model["kind"] != "face_embedder":
        raise ApiError(
            409,
            "not_unloadable",
            f"{model['name']} is the detector and stays loaded while the add-on runs",
        )
    services.reid.unload()
    services.devices.release(services.devices.device_for("zoo"), LEDGER_OWNER)
    return web.json_response(_find(services, model["name"]))


ROUTES = [
    Route(
        "GET",
        "/v1/models",
        list_models,
        "Models, where they run and whether loaded",
        "list_models",
        responses={"200": json_response("Models", "ModelList")},
        tags=("models",),
    ),
    Route(
        "POST",
        "/v1/models/{name}/load",
        load_model,
        "Load a model",
        "load_model",
        parameters=(path_param("name", "Model name"),),
        responses={
            "200": json_response("The model", "Model"),
            "404": error("Unknown model"),
            "409": error("Model not installed"),
        },
        tags=("models",),
    ),
    Route(
        "POST",
        "/v1/models/{name}/unload",
        unload_model,
        "Unload a model",
        "unload_model",
        parameters=(path_param("name", "Model name"),),
        responses={
            "200": json_response("The model", "Model"),
            "404": error("Unknown model"),
            "409": error("The model cannot be unloaded"),
        },
        tags=("models",),
    ),
]
