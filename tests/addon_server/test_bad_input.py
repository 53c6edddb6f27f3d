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
