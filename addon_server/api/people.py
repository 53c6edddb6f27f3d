"""``/v1/people``: enrol known people by name from images; list and delete them."""

from __future__ import annotations

from aiohttp import web

from addon_server.api.errors import ApiError
from addon_server.api.images import IMAGE_FIELD, MULTIPART, decode_upload, read_form
from addon_server.api.routes import (
    STORAGE_FULL,
    STORAGE_UNAVAILABLE,
    Route,
    error,
    json_response,
    path_param,
)
from addon_server.api.schemas import BINARY, PERSON_NAME_MAX_LENGTH, array, form, ref
from addon_server.reid.gallery import NoFaceError
from addon_server.services import SERVICES_KEY
from addon_server.store import DuplicatePersonError

MAX_IMAGES = 10
MAX_NAME = PERSON_NAME_MAX_LENGTH


async def enroll(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    if request.content_type != MULTIPART:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send {MULTIPART} with a 'name' field and {IMAGE_FIELD!r} files",
        )
    form = await read_form(request, services.settings.server.max_body_bytes, max_images=MAX_IMAGES)
    name = form.fields.get("name", "").strip()
    if not name or len(name) > MAX_NAME:
        raise ApiError(400, "bad_parameter", f"name is required (1-{MAX_NAME} characters)")
    # A bad request is the client's to fix whether or not the embedder is installed.
    if not services.reid.available:
        raise ApiError(
            503, "model_not_installed", services.reid.load_error or "no face embedder installed"
        )
    max_pixels = services.settings.images.max_pixels
    max_side = services.settings.analysis.max_side
    images = [
        # At the analysis' working size: ten 36 Mpx uploads must not cost a gigabyte, and a
        # face crop needs far fewer pixels than that.
        (await decode_upload(upload.data, upload.declared, max_pixels, max_side=max_side)).pixels
        for upload in form.images
    ]
    try:
        person = await services.reid.enroll(name, images)
    except NoFaceError as err:
        raise ApiError(400, "no_face", str(err)) from None
    except DuplicatePersonError as err:
        raise ApiError(409, "duplicate_person", str(err)) from None
    return web.json_response(person.as_json(), status=201)


async def list_people(request: web.Request) -> web.Response:
    people = await request.app[SERVICES_KEY].store.list_people()
    return web.json_response({"people": [p.as_json() for p in people]})


async def delete_person(request: web.Request) -> web.Response:
    person_id = request.match_info["person_id"]
    if not await request.app[SERVICES_KEY].store.delete_person(person_id):
        raise ApiError(404, "unknown_person", f"no person {person_id!r}")
    return web.json_response({"deleted": person_id})


ROUTES = [
    Route(
        "POST",
        "/v1/people",
        enroll,
        "Enrol a known person from face images",
        "enroll_person",
        request_body={
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": form(
                        {
                            "name": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": PERSON_NAME_MAX_LENGTH,
                            },
                            IMAGE_FIELD: {**array(BINARY), "minItems": 1, "maxItems": MAX_IMAGES},
                        }
                    )
                }
            },
        },
        responses={
            "201": json_response("The enrolled person", "Person"),
            "400": error("No name, no image, or no face in an image"),
            "409": error("Name already enrolled"),
            "413": error("Body or image too large"),
            "415": error("Not a multipart/form-data body"),
            "503": error("Face embedder not installed, or the data dir unavailable"),
            "507": STORAGE_FULL,
        },
        tags=("people",),
    ),
    Route(
        "GET",
        "/v1/people",
        list_people,
        "Enrolled people",
        "list_people",
        responses={"200": json_response("People", "PersonList"), "503": STORAGE_UNAVAILABLE},
        tags=("people",),
    ),
    Route(
        "DELETE",
        "/v1/people/{person_id}",
        delete_person,
        "Forget an enrolled person",
        "delete_person",
        parameters=(path_param("person_id", "Person id", ref("Id")),),
        responses={
            "200": json_response("Deleted", "PersonDeleted"),
            "404": error("Unknown person"),
            "503": STORAGE_UNAVAILABLE,
            "507": STORAGE_FULL,
        },
        tags=("people",),
    ),
]
