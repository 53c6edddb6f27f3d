"""Every kind of bad input gets a clear 4xx JSON error, and the server keeps serving."""

from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image

from addon_server.app import create_app
from tests.addon_server.conftest import CountingDetector, persons

JPEG = {"Content-Type": "image/jpeg"}


@pytest.fixture
async def client(aiohttp_client, make_settings, counting_detector: CountingDetector):
    settings = make_settings(
        {
            "detector": {"warmup": False},
            "server": {"max_body_mb": 1},
            "images": {"max_pixels": 20_000_000},
        }
    )
    return await aiohttp_client(create_app(settings, detector=counting_detector))


def _bomb_png(side: int) -> bytes:
    """A tiny file that claims ``side``×``side`` pixels: a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


async def _assert_error(resp: aiohttp.ClientResponse, status: int, code: str, *words: str) -> None:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"]["code"] == code
    for word in words:
        assert word in body["error"]["message"]


async def _still_serves(client, bus_jpg: bytes) -> None:
    resp = await client.post("/v1/detect", data=bus_jpg, headers=JPEG)
    assert resp.status == 200
    assert persons(await resp.json()) >= 3


@pytest.mark.parametrize(
    ("make_body", "headers", "status", "code", "words"),
    [
        (lambda bus: b"", JPEG, 400, "empty_body", ("empty",)),
        (lambda bus: bus[: len(bus) // 2], JPEG, 400, "invalid_image", ("truncated",)),
        (lambda bus: bus[:200] + b"\x00" * 5000, JPEG, 400, "invalid_image", ()),
        (
            lambda bus: b"hello, I am not an image" * 10,
            JPEG,
            400,
            "invalid_image",
            ("not a JPEG", "signature"),
        ),
        (
            lambda bus: b"GIF89a" + b"\x00" * 100,
            {"Content-Type": "image/gif"},
            415,
            "unsupported_media_type",
            ("image/gif",),
        ),
        (
            lambda bus: b"{}",
            {"Content-Type": "application/json"},
            415,
            "unsupported_media_type",
            (),
        ),
        (
            lambda bus: _bomb_png(30_000),
            {"Content-Type": "image/png"},
            413,
            "image_too_large",
            ("30000x30000", "decompression bomb"),
        ),
        (lambda bus: bus * 10, JPEG, 413, "payload_too_large", ("limit",)),
    ],
    ids=["empty", "truncated", "corrupt", "text", "gif", "json", "bomb", "oversized"],
)
async def test_bad_bodies(client, bus_jpg, make_body, headers, status, code, words) -> None:
    resp = await client.post("/v1/detect", data=make_body(bus_jpg), headers=headers)
    await _assert_error(resp, status, code, *words)
    await _still_serves(client, bus_jpg)


async def test_bomb_is_refused_before_decoding() -> None:
    """The bomb's header alone decides: 900 M pixels are never allocated."""
    from addon_server.imaging import ImageTooLargeError, decode

    with pytest.raises(ImageTooLargeError):
        decode(_bomb_png(30_000), max_pixels=20_000_000)


async def test_oversized_chunked_multipart_is_refused(client, bus_jpg) -> None:
    async def chunks():
        yield b'--B\r\nContent-Disposition: form-data; name="image"\r\n'
        yield b"Content-Type: image/jpeg\r\n\r\n"
        for _ in range(12):
            yield bus_jpg  # ~1.6 MB against a 1 MB limit, without a Content-Length
        yield b"\r\n--B--\r\n"

    resp = await client.post(
        "/v1/detect", data=chunks(), headers={"Content-Type": "multipart/form-data; boundary=B"}
    )
    await _assert_error(resp, 413, "payload_too_large")
    await _still_serves(client, bus_jpg)


async def test_multipart_without_image_field(client, bus_jpg) -> None:
    form = aiohttp.FormData()
    form.add_field("picture", bus_jpg, filename="bus.jpg", content_type="image/jpeg")
    resp = await client.post("/v1/detect", data=form)
    await _assert_error(resp, 400, "empty_body", "'image'")


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("confidence=abc", ("confidence", "abc")),
        ("confidence=1.5", ("between 0 and 1",)),
        ("confidence=-0.1", ("between 0 and 1",)),
        ("classes=person,unicorn", ("unicorn",)),
        ("classes=,,", ("at least one",)),
    ],
)
async def test_bad_parameters(client, bus_jpg, query, words) -> None:
    resp = await client.post(f"/v1/detect?{query}", data=bus_jpg, headers=JPEG)
    await _assert_error(resp, 400, "bad_parameter", *words)


async def test_unknown_route_and_method_are_json(client) -> None:
    await _assert_error(await client.get("/v1/nope"), 404, "not_found", "/v1/nope")
    await _assert_error(await client.get("/v1/detect"), 405, "method_not_allowed", "GET")


# Every endpoint that takes images reads them the same way (addon_server.api.images).
UPLOAD_ENDPOINTS = ["/v1/detect", "/v1/analyze?camera=front_door&llm=false", "/v1/people"]
IMAGE_HEAD = b'Content-Disposition: form-data; name="image"; filename="bus.jpg"\r\n'
IMAGE_HEAD += b"Content-Type: image/jpeg"


def _part(head: bytes, data: bytes, boundary: bytes = b"B") -> bytes:
    return b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n"


def _form(image: bytes, boundary: bytes = b"B", image_head: bytes = IMAGE_HEAD) -> bytes:
    name = _part(b'Content-Disposition: form-data; name="name"', b"Zinedine", boundary)
    return name + _part(image_head, image, boundary) + b"--" + boundary + b"--\r\n"


def _multipart(boundary: str = "B") -> dict[str, str]:
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.mark.parametrize("endpoint", UPLOAD_ENDPOINTS)
@pytest.mark.parametrize(
    ("headers", "make_body"),
    [
        ({"Content-Type": "multipart/form-data"}, _form),
        (_multipart("b" * 71), lambda bus: _form(bus, b"b" * 71)),
        (_multipart("C"), _form),
        (_multipart(), lambda bus: b""),
        (_multipart(), lambda bus: _form(bus)[: len(bus) // 2]),
        (_multipart(), lambda bus: bytes(range(256)) * 40),
        (_multipart(), lambda bus: _form(bus, image_head=IMAGE_HEAD + b"\x01")),
        (_multipart(), lambda bus: _form(bus, image_head=IMAGE_HEAD + b"\r\nX-\x01: y")),
        (_multipart(), lambda bus: _form(bus, image_head=IMAGE_HEAD + b"\r\nX-A: \x00")),
        (_multipart(), lambda bus: _form(bus, image_head=IMAGE_HEAD + b"\r\nno colon")),
    ],
    ids=[
        "no-boundary",
        "boundary-over-70",
        "wrong-boundary",
        "empty",
        "truncated",
        "garbage",
        "control-in-part-header",
        "control-in-part-header-name",
        "nul-in-part-header",
        "part-header-without-colon",
    ],
)
async def test_malformed_multipart(client, bus_jpg, endpoint, headers, make_body) -> None:
    resp = await client.post(endpoint, data=make_body(bus_jpg), headers=headers)
    await _assert_error(resp, 400, "bad_request", "malformed multipart body")
    await _still_serves(client, bus_jpg)


def _text_fields(bus: bytes) -> list[bytes]:
    field = b"x" * 30_000  # each field is well under the 64 KiB a text field may hold
    head = b'Content-Disposition: form-data; name="field%d"'
    return [_part(IMAGE_HEAD, bus[:5000])] + [_part(head % i, field) for i in range(40)]


def _skipped_files(bus: bytes) -> list[bytes]:
    head = b'Content-Disposition: form-data; name="other"; filename="o.bin"'
    return [_part(IMAGE_HEAD, bus[:5000])] + [_part(head, b"y" * 30_000) for _ in range(40)]


def _preamble(bus: bytes) -> list[bytes]:
    return [b"preamble\r\n" * 12_000 for _ in range(10)] + [_part(IMAGE_HEAD, bus[:5000])]


@pytest.mark.parametrize("endpoint", UPLOAD_ENDPOINTS)
@pytest.mark.parametrize("make_parts", [_text_fields, _skipped_files, _preamble])
async def test_chunked_body_is_limited_as_a_whole(client, bus_jpg, endpoint, make_parts) -> None:
    """~1.2 MB against a 1 MB limit, chunked (no Content-Length), in parts each under it."""
    parts = make_parts(bus_jpg)
    assert sum(map(len, parts)) > 1024 * 1024 > max(map(len, parts))

    async def chunks():
        for part in parts:
            yield part
        yield b"--B--\r\n"

    resp = await client.post(endpoint, data=chunks(), headers=_multipart())
    await _assert_error(resp, 413, "payload_too_large", "limit")
    await _still_serves(client, bus_jpg)


@pytest.mark.parametrize("endpoint", UPLOAD_ENDPOINTS)
async def test_too_many_parts(client, endpoint) -> None:
    head = b'Content-Disposition: form-data; name="f%d"'
    body = b"".join(_part(head % i, b"1") for i in range(100)) + b"--B--\r\n"
    resp = await client.post(endpoint, data=body, headers=_multipart())
    await _assert_error(resp, 400, "bad_request", "parts")
