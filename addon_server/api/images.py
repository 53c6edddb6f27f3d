"""Reading uploads: a raw image body, or a multipart form of ``image`` files and text fields.

One reader serves every endpoint that takes images (/v1/detect, /v1/analyze, /v1/people), so a
malformed body gets the same 400 everywhere. The body limit (``server.max_body_bytes``) is
enforced three ways: up front from Content-Length, so an honest oversized upload is refused
before it is read; by aiohttp (``client_max_size``) for a raw body; and for multipart, on a
running total of every byte of the body as it streams in, whichever part those bytes belong to
(preamble, part headers, text fields, skipped files). A chunked upload has no Content-Length,
and a limit per part alone lets many parts add up without bound.

Decoding itself happens in :mod:`addon_server.imaging`, off the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from aiohttp.http import HttpProcessingError

from addon_server.api.errors import ApiError
from addon_server.imaging import DecodedImage, ImageError, check_content_type, decode

IMAGE_FIELD = "image"
MULTIPART = "multipart/form-data"
MAX_FIELD_BYTES = 64 * 1024
"""A text field (``camera``, ``name``, ...) is a short option, never a payload."""
MAX_PARTS = 64
"""Enough for any form the API takes (at most 10 images and a few options)."""


@dataclass(frozen=True, slots=True)
class Upload:
    """One uploaded image, still encoded, and the type its sender declared."""

    data: bytes
    declared: str | None


@dataclass(frozen=True, slots=True)
class Form:
    """A multipart form: its ``image`` files in order, and its other named text fields."""

    images: tuple[Upload, ...]
    fields: dict[str, str]


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body is over the limit of {limit} bytes")


def _check_length(request: web.Request, limit: int) -> None:
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(
            413,
            "payload_too_large",
            f"request body is {length} bytes, over the limit of {limit} bytes",
        )


class _CountedBody:
    """The request body as :class:`MultipartReader` reads it, refused once it passes ``limit``.

    It checks the body stream's running total (``total_bytes``: every byte received for this
    request) after each read the multipart reader makes, including those inside aiohttp's own
    loops (the preamble before the first boundary, part headers, releasing a skipped part) that
    never hand control back to the handler. Anything else is the stream's own.
    """

    def __init__(self, stream: StreamReader, limit: int) -> None:
        self._stream = stream
        self._limit = limit

    def _checked(self, data: bytes) -> bytes:
        if self._stream.total_bytes > self._limit:
            raise _too_large(self._limit)
        return data

    async def read(self, n: int = -1) -> bytes:
        return self._checked(await self._stream.read(n))

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        return self._checked(await self._stream.readline(max_line_length=max_line_length))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


async def _read_part(part: BodyPartReader, cap: int | None = None) -> bytes:
    """All of one part; with ``cap``, a 413 once the part alone passes it."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk():
        size += len(chunk)
        if cap is not None and size > cap:
            raise ApiError(413, "payload_too_large", f"field {part.name!r} is over {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_parts(request: web.Request, limit: int, max_images: int) -> Form:
    reader = MultipartReader(
        request.headers, cast(StreamReader, _CountedBody(request.content, limit))
    )
    images: list[Upload] = []
    fields: dict[str, str] = {}
    parts = 0
    async for part in reader:
        parts += 1
        if parts > MAX_PARTS:
            raise ApiError(400, "bad_request", f"multipart body has more than {MAX_PARTS} parts")
        if not isinstance(part, BodyPartReader):
            continue  # a nested multipart: the reader skips it, counted, on the next part
        if part.name == IMAGE_FIELD:
            if len(images) == max_images:
                raise ApiError(
                    400,
                    "bad_parameter",
                    f"at most {max_images} {IMAGE_FIELD!r} file(s) per request",
                )
            images.append(Upload(await _read_part(part), part.headers.get("Content-Type")))
        elif part.name and part.filename is None:
            raw = await _read_part(part, MAX_FIELD_BYTES)
            fields[part.name] = raw.decode("utf-8", errors="replace")
        else:
            await part.release()  # an unexpected file: read past it (counted like the rest)
    return Form(tuple(images), fields)


async def read_form(request: web.Request, limit: int, *, max_images: int = 1) -> Form:
    """Read a ``multipart/form-data`` body; 400 when it is malformed, 413 past ``limit``.

    The caller has checked the content type is multipart/form-data.
    """
    _check_length(request, limit)
    try:
        form = await _read_parts(request, limit, max_images)
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as err:
        # aiohttp's multipart parser reports a missing, overlong or wrong boundary, a truncated
        # body and bad part headers (control characters, too many) with these.
        raise ApiError(400, "bad_request", f"malformed multipart body: {err}") from None
    if not form.images:
        raise ApiError(400, "empty_body", f"multipart body has no {IMAGE_FIELD!r} field")
    return form


async def read_upload(request: web.Request, limit: int) -> tuple[bytes, str | None, dict[str, str]]:
    """Return the image bytes, their declared type and any other multipart text fields."""
    if request.content_type == MULTIPART:
        form = await read_form(request, limit)
        return form.images[0].data, form.images[0].declared, form.fields
    _check_length(request, limit)
    declared = request.content_type
    try:
        check_content_type(declared)
    except ImageError as err:
        raise ApiError(err.status, err.code, str(err)) from None
    return await request.read(), declared, {}


async def decode_upload(
    data: bytes,
    declared: str | None,
    max_pixels: int,
    min_side: int | None = None,
    max_side: int | None = None,
) -> DecodedImage:
    """Decode off the event loop; ``min_side``/``max_side`` as in :func:`imaging.decode`."""
    try:
        return await asyncio.to_thread(
            decode,
            data,
            max_pixels=max_pixels,
            content_type=declared,
            min_side=min_side,
            max_side=max_side,
        )
    except ImageError as err:
        raise ApiError(err.status, err.code, str(err)) from None
