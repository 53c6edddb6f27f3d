"""Reading an uploaded image from a request: a raw image body or a multipart ``image`` field.

The body size limit is enforced by aiohttp (``client_max_size``) and up front from
Content-Length; decoding itself happens in :mod:`addon_server.imaging`, off the event loop.
"""

from __future__ import annotations

import asyncio

from aiohttp import BodyPartReader, web

from addon_server.api.errors import ApiError
from addon_server.imaging import DecodedImage, ImageError, check_content_type, decode

IMAGE_FIELD = "image"


def _check_length(request: web.Request, limit: int) -> None:
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(
            413,
            "payload_too_large",
            f"request body is {length} bytes, over the limit of {limit} bytes",
        )


async def read_upload(request: web.Request, limit: int) -> tuple[bytes, str | None, dict[str, str]]:
    """Return the image bytes, their declared type and any other multipart text fields.

    ``limit`` is the same byte limit aiohttp enforces while reading (``client_max_size``);
    checking Content-Length first refuses an honest oversized upload before reading it.
    """
    _check_length(request, limit)
    fields: dict[str, str] = {}
    if request.content_type == "multipart/form-data":
        data: bytes | None = None
        declared: str | None = None
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == IMAGE_FIELD:
                    declared = part.headers.get("Content-Type")
                    data = await read_part(part, limit)
                elif part.name and part.filename is None:
                    raw = await read_part(part, 64 * 1024)
                    fields[part.name] = raw.decode("utf-8", errors="replace")
                else:
                    await part.release()  # an unexpected file: skip it
        except web.HTTPException:
            raise
        except (ValueError, AssertionError) as err:
            raise ApiError(400, "bad_request", f"malformed multipart body: {err}") from None
        if data is None:
            raise ApiError(400, "empty_body", f"multipart body has no {IMAGE_FIELD!r} field")
        return data, declared, fields
    declared = request.content_type
    try:
        check_content_type(declared)
    except ImageError as err:
        raise ApiError(err.status, err.code, str(err)) from None
    return await request.read(), declared, fields


async def read_part(part: BodyPartReader, limit: int) -> bytes:
    """Read one multipart part, refusing it once it passes ``limit`` bytes.

    aiohttp's ``client_max_size`` guards ``request.read()`` but not a streamed multipart part,
    and a chunked upload has no Content-Length to check first.
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk():
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413, "payload_too_large", f"image part is over the limit of {limit} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def decode_upload(
    data: bytes, declared: str | None, max_pixels: int, min_side: int | None = None
) -> DecodedImage:
    try:
        return await asyncio.to_thread(
            decode, data, max_pixels=max_pixels, content_type=declared, min_side=min_side
        )
    except ImageError as err:
        raise ApiError(err.status, err.code, str(err)) from None
