"""``/v1/people``: enrol known people by name from images; list and delete them."""

from __future__ import annotations

from aiohttp import BodyPartReader, web

from addon_server.api.errors import ApiError
from addon_server.api.images import IMAGE_FIELD, decode_upload, read_part
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


async def enroll(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    if not services.reid.available:
        raise ApiError(
            503, "model_not_installed", services.reid.load_error or "no face embedder installed"
        )
    if request.content_type != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "send multipart/form-data with a 'name' field and 'image' files",
        )
    limit = services.settings.server.max_body_bytes
    name = ""
    uploads: list[tuple[bytes, str | None]] = []
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "name":
            name = (await read_part(part, 1024)).decode("utf-8", errors="replace").strip()
        elif part.name == IMAGE_FIELD:
            if len(uploads) == MAX_IMAGES:
                raise ApiError(400, "bad_parameter", f"at most {MAX_IMAGES} images per person")
            uploads.append((await read_part(part, limit), part.headers.get("Content-Type")))
        else:
            await part.release()
    if not name or len(name) > 64:
        raise ApiError(400, "bad_parameter", "name is required (1-64 characters)")
    if not uploads:
        raise ApiError(400, "empty_body", "at least one 'image' file is required")
    max_pixels = services.settings.images.max_pixels
    images = [
        (await decode_upload(data, declared, max_pixels)).pixels for data, declared in uploads
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
