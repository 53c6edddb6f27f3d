"""Privacy (issue 15 item 6): unknown faces are blurred in stored snapshots, enrolled ones not.

Real photos through the real add-on on loopback: zidane.jpg shows two men; Zidane (right) is
enrolled from a crop that holds his face only, so in the full photo his face is matched and
Ancelotti's (left) is not. The stored snapshot is compared with the upload inside each face
box (shrunk a little, so the drawn box outline does not count): a blurred face loses almost all
of its Laplacian variance (its edges) and differs strongly from the original; a clear one
differs only by the JPEG re-encode.
"""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import cv2
import numpy as np
from PIL import Image

from addon_server.app import create_app
from addon_server.config import PrivacySettings
from addon_server.detector.base import Detection
from addon_server.imaging import BGRImage, decode
from addon_server.privacy import faces_to_blur
from tests.addon_server.conftest import CountingDetector, needs_shared_models

ZIDANE_X = 760
"""zidane.jpg from this column on holds Zidane's face and not Ancelotti's."""


def _pixels(jpeg: bytes) -> BGRImage:
    return decode(jpeg, max_pixels=10**8).pixels


def _inner(pixels: BGRImage, bbox: dict[str, int], shrink: float = 0.15) -> BGRImage:
    dx, dy = round(bbox["width"] * shrink), round(bbox["height"] * shrink)
    x, y = bbox["x"] + dx, bbox["y"] + dy
    return pixels[y : y + bbox["height"] - 2 * dy, x : x + bbox["width"] - 2 * dx]


def _sharpness(region: BGRImage) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(region, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def _difference(a: BGRImage, b: BGRImage) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


async def _analysed(client: Any, zidane_jpg: bytes, *, enrol: bool) -> tuple[dict[str, Any], bytes]:
    if enrol:
        crop = Image.open(io.BytesIO(zidane_jpg)).crop((ZIDANE_X, 0, 1280, 720))
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=95)
        form = aiohttp.FormData()
        form.add_field("name", "Zinedine")
        form.add_field("image", buffer.getvalue(), filename="z.jpg", content_type="image/jpeg")
        enrolled = await client.post("/v1/people", data=form)
        assert enrolled.status == 201, await enrolled.text()
    resp = await client.post(
        "/v1/analyze?camera=porch&llm=false",
        data=zidane_jpg,
        headers={"Content-Type": "image/jpeg"},
    )
    assert resp.status == 200, await resp.text()
    event = await resp.json()
    snapshot = await client.get(event["snapshot_url"])
    assert snapshot.status == 200
    return event, await snapshot.read()


def _faces(event: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """(Zidane's face box, Ancelotti's face box) from the event's re-ID."""
    faces = event["reid"]
    assert len(faces) == 2, faces
    known = [f for f in faces if f["person_name"] == "Zinedine"]
    unknown = [f for f in faces if f["person_name"] is None]
    assert len(known) == 1 and len(unknown) == 1, faces
    assert known[0]["bbox"]["x"] > ZIDANE_X > unknown[0]["bbox"]["x"]
    return known[0]["bbox"], unknown[0]["bbox"]


@needs_shared_models("faceres.onnx")
async def test_unknown_faces_are_blurred_and_the_enrolled_face_is_not(
    aiohttp_client: Any,
    make_settings: Any,
    counting_detector: CountingDetector,
    zidane_jpg: bytes,
) -> None:
    settings = make_settings({"detector": {"warmup": False}}, BLUR_UNKNOWN_FACES="true")
    assert settings.privacy.blur_unknown_faces
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    event, snapshot = await _analysed(client, zidane_jpg, enrol=True)
    known, unknown = _faces(event)
    original, stored = _pixels(zidane_jpg), _pixels(snapshot)
    assert stored.shape == original.shape

    before, after = _inner(original, unknown), _inner(stored, unknown)
    assert _sharpness(after) < 0.05 * _sharpness(before), (_sharpness(before), _sharpness(after))
    assert _difference(before, after) > 8

    before, after = _inner(original, known), _inner(stored, known)
    assert _sharpness(after) > 0.5 * _sharpness(before), (_sharpness(before), _sharpness(after))
    assert _difference(before, after) < 5

    health = await (await client.get("/health")).json()
    assert health["privacy"] == {"blur_unknown_faces": True, "local_only": False}
    # The upload reached no file: no piece of it is in the data dir (SQLite, WAL, anything).
    stored_files = [p for p in settings.server.data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("vigil.db") for p in stored_files)
    for path in stored_files:
        content = path.read_bytes()
        assert all(zidane_jpg[at : at + 512] not in content for at in range(1024, 40960, 4096))


@needs_shared_models("faceres.onnx")
async def test_with_the_option_off_no_face_is_blurred(
    aiohttp_client: Any,
    make_settings: Any,
    counting_detector: CountingDetector,
    zidane_jpg: bytes,
) -> None:
    settings = make_settings({"detector": {"warmup": False}})
    assert not settings.privacy.blur_unknown_faces
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    event, snapshot = await _analysed(client, zidane_jpg, enrol=True)
    original, stored = _pixels(zidane_jpg), _pixels(snapshot)
    for bbox in _faces(event):
        before, after = _inner(original, bbox), _inner(stored, bbox)
        assert _sharpness(after) > 0.5 * _sharpness(before)
        assert _difference(before, after) < 5
    health = await (await client.get("/health")).json()
    assert health["privacy"] == {"blur_unknown_faces": False, "local_only": False}


async def test_without_a_face_search_every_person_s_head_is_blurred(
    aiohttp_client: Any,
    make_settings: Any,
    counting_detector: CountingDetector,
    zidane_jpg: bytes,
) -> None:
    """Re-ID off: nobody can be recognised, so the option fails closed on the person boxes."""
    settings = make_settings(
        {"detector": {"warmup": False}, "reid": {"enabled": False}}, BLUR_UNKNOWN_FACES="1"
    )
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    event, snapshot = await _analysed(client, zidane_jpg, enrol=False)
    assert event["reid"] == []
    original, stored = _pixels(zidane_jpg), _pixels(snapshot)
    people = [d["bbox"] for d in event["detections"] if d["class"] == "person"]
    assert len(people) == 2
    for bbox in people:
        head = {**bbox, "height": round(bbox["height"] * 0.25)}
        before, after = _inner(original, head), _inner(stored, head)
        assert _sharpness(after) < 0.1 * _sharpness(before)


def test_only_faces_nobody_enrolled_are_returned() -> None:
    """The choice itself: off returns nothing; a search without faces blurs nothing."""
    person = Detection("person", 0.9, 10, 20, 100, 400)
    assert faces_to_blur(PrivacySettings(), [], [person], searched=False) == ()
    on = PrivacySettings(blur_unknown_faces=True)
    assert faces_to_blur(on, [], [person], searched=True) == ()
    (head,) = faces_to_blur(on, [], [person], searched=False)
    assert (head.x, head.y, head.width, head.height) == (10, 20, 100, 100)
