"""/v1/analyze end to end on the real server: real detector, real face re-ID, real SQLite."""

from __future__ import annotations

import io
import json
import os
import signal
from datetime import UTC, datetime, timedelta, timezone

import aiohttp
import numpy as np
import pytest
from PIL import Image

from addon_server.app import create_app
from tests.addon_server.conftest import (
    LLM_HANG_GUARDS,
    LLM_HANG_TIMEOUT_S,
    CountingDetector,
    eventually,
    needs_shared_models,
)

JPEG = {"Content-Type": "image/jpeg"}


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def zidane_other_camera(zidane_jpg: bytes) -> bytes:
    """zidane.jpg as a second camera would see it: cropped, smaller, brighter."""
    image = Image.open(io.BytesIO(zidane_jpg)).convert("RGB")
    cropped = image.crop((300, 0, 1280, 720)).resize((735, 540))
    array = np.clip(np.asarray(cropped, dtype=np.float32) * 1.1 + 10, 0, 255).astype(np.uint8)
    return _jpeg(Image.fromarray(array))


@pytest.fixture
def astronaut_jpg() -> bytes:
    from skimage import data

    return _jpeg(Image.fromarray(data.astronaut()))


@pytest.fixture
def settings(make_settings):
    return make_settings({"detector": {"warmup": False}})


@pytest.fixture
async def client(aiohttp_client, settings, counting_detector: CountingDetector):
    return await aiohttp_client(create_app(settings, detector=counting_detector))


def _iso(offset_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat()


async def _analyze(client, image: bytes, camera: str, **params: str) -> dict:
    resp = await client.post(
        "/v1/analyze", params={"camera": camera, **params}, data=image, headers=JPEG
    )
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_analyze_bus_stores_a_complete_event(client, bus_jpg) -> None:
    event = await _analyze(client, bus_jpg, "front_door", zone="porch", llm="false")
    assert event["camera"] == "front_door"
    assert event["zone"] == "porch"
    assert event["counts"]["person"] >= 3
    assert event["counts"]["vehicle"] >= 1  # the bus, found on the full-resolution decode
    assert 0 <= event["risk_score"] <= 100
    assert event["risk_level"] in {"low", "medium", "high", "critical"}
    assert event["llm_status"] == "skipped"
    assert event["llm_decision"]["reason"] == "request_off"
    assert (event["revision"], event["phase"]) == (1, "initial")
    assert event["factors"], "every event carries the factors that drove it"
    assert all({"name", "points", "detail"} <= set(f) for f in event["factors"])
    assert set(event["timings_ms"]) >= {"decode", "detect", "reid", "reason", "store"}
    assert event["image"] == {"width": 810, "height": 1080}
    stored = await (await client.get(f"/v1/events/{event['id']}")).json()
    for key in ("risk_score", "risk_level", "summary", "factors", "detections", "counts"):
        assert stored[key] == event[key]


async def test_snapshot_is_an_annotated_jpeg_of_the_image_size(client, bus_jpg) -> None:
    event = await _analyze(client, bus_jpg, "front_door", llm="false")
    resp = await client.get(event["snapshot_url"])
    assert resp.status == 200
    assert resp.content_type == "image/jpeg"
    snapshot = Image.open(io.BytesIO(await resp.read()))
    assert snapshot.format == "JPEG"
    assert snapshot.size == (810, 1080)
    original = np.asarray(Image.open(io.BytesIO(bus_jpg)).convert("RGB"), dtype=np.int16)
    drawn = np.asarray(snapshot.convert("RGB"), dtype=np.int16)
    box = event["detections"][0]["bbox"]
    edge = (
        drawn[box["y"] + box["height"] // 2, box["x"]]
        - original[box["y"] + box["height"] // 2, box["x"]]
    )
    assert np.abs(edge).sum() > 60, "the box outline is drawn on the snapshot"


@needs_shared_models("faceres.onnx")
async def test_a_large_upload_is_analysed_at_the_working_size(
    aiohttp_client, make_settings, counting_detector, zidane_jpg, zidane_4x_png
) -> None:
    """A 5120x2880 PNG is analysed at ``max_side`` and reported in its own pixels.

    Reduced to the working size the upload is exactly zidane.jpg, so every detection and face
    must be the photo's, times 4, and the stored snapshot has the working size, not 14.7 Mpx.
    """
    settings = make_settings({"detector": {"warmup": False}, "analysis": {"max_side": 1280}})
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    small = await _analyze(client, zidane_jpg, "front_door", llm="false")
    resp = await client.post(
        "/v1/analyze",
        params={"camera": "front_door", "llm": "false"},
        data=zidane_4x_png,
        headers={"Content-Type": "image/png"},
    )
    assert resp.status == 200, await resp.text()
    large = await resp.json()
    assert large["image"] == {"width": 5120, "height": 2880}
    assert small["detections"] and small["reid"]

    def times_4(box: dict[str, int]) -> dict[str, int]:
        return {key: value * 4 for key, value in box.items()}

    assert [(d["class"], d["bbox"]) for d in large["detections"]] == [
        (d["class"], times_4(d["bbox"])) for d in small["detections"]
    ]
    assert [face["bbox"] for face in large["reid"]] == [
        times_4(face["bbox"]) for face in small["reid"]
    ]
    snapshot = Image.open(io.BytesIO(await (await client.get(large["snapshot_url"])).read()))
    assert snapshot.size == (1280, 720)


async def test_event_survives_a_restart(
    aiohttp_client, settings, counting_detector, bus_jpg
) -> None:
    first = await aiohttp_client(create_app(settings, detector=counting_detector))
    event = await _analyze(first, bus_jpg, "garage", llm="false")
    await first.close()
    second = await aiohttp_client(create_app(settings, detector=counting_detector))
    stored = await second.get(f"/v1/events/{event['id']}")
    assert stored.status == 200
    assert (await stored.json())["risk_score"] == event["risk_score"]
    snapshot = await second.get(f"/v1/events/{event['id']}/snapshot.jpg")
    assert Image.open(io.BytesIO(await snapshot.read())).size == (810, 1080)


async def test_event_list_filters(client, bus_jpg, coffee_jpg) -> None:
    old = await _analyze(client, coffee_jpg, "kitchen", llm="false", timestamp=_iso(-600))
    busy = await _analyze(client, bus_jpg, "street", llm="false")
    listed = (await (await client.get("/v1/events")).json())["events"]
    assert [e["id"] for e in listed] == [busy["id"], old["id"]]  # newest first
    only_kitchen = (await (await client.get("/v1/events?camera=kitchen")).json())["events"]
    assert [e["id"] for e in only_kitchen] == [old["id"]]
    recent = await client.get("/v1/events", params={"since": _iso(-60)})
    assert [e["id"] for e in (await recent.json())["events"]] == [busy["id"]]
    limited = (await (await client.get("/v1/events?limit=1")).json())["events"]
    assert len(limited) == 1
    level = busy["risk_level"]
    at_least = (await (await client.get(f"/v1/events?min_level={level}")).json())["events"]
    assert busy["id"] in [e["id"] for e in at_least]
    assert old["risk_level"] == "low"
    if level != "low":
        assert old["id"] not in [e["id"] for e in at_least]


async def test_retention_by_count(
    aiohttp_client, make_settings, counting_detector, coffee_jpg
) -> None:
    settings = make_settings({"detector": {"warmup": False}, "store": {"max_events": 3}})
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    ids = [
        (await _analyze(client, coffee_jpg, "yard", llm="false", timestamp=_iso(-100 + i)))["id"]
        for i in range(5)
    ]
    listed = [e["id"] for e in (await (await client.get("/v1/events")).json())["events"]]
    assert listed == list(reversed(ids[2:]))
    assert (await client.get(f"/v1/events/{ids[0]}")).status == 404


async def test_retention_by_age(
    aiohttp_client, make_settings, counting_detector, coffee_jpg
) -> None:
    settings = make_settings({"detector": {"warmup": False}, "store": {"max_age_days": 0.01}})
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    old = await _analyze(client, coffee_jpg, "yard", llm="false", timestamp=_iso(-800))
    mid = await _analyze(client, coffee_jpg, "yard", llm="false", timestamp=_iso(-100))
    assert (await client.get(f"/v1/events/{old['id']}")).status == 200  # inside 0.01 d = 864 s
    # an event stamped 200 s ahead moves the cut-off to now - 664 s: the -800 s event ages out
    await _analyze(client, coffee_jpg, "yard", llm="false", timestamp=_iso(200))
    assert (await client.get(f"/v1/events/{old['id']}")).status == 404
    assert (await client.get(f"/v1/events/{mid['id']}")).status == 200


@needs_shared_models("faceres.onnx")
async def test_reid_matches_across_cameras_and_not_a_different_person(
    client, zidane_jpg, zidane_other_camera, astronaut_jpg
) -> None:
    # At night: by day, a stranger passing two cameras is a caller's round, not a factor.
    now = datetime.now(UTC)
    night = now.replace(hour=2, minute=0, second=0, microsecond=0)
    night -= timedelta(days=1) if night > now else timedelta(0)
    first = await _analyze(
        client,
        zidane_jpg,
        "front_door",
        llm="false",
        timestamp=(night - timedelta(seconds=300)).isoformat(),
    )
    # Zidane (turned to the camera's left, which the Haar cascade missed) and Ancelotti
    assert len(first["reid"]) == 2, "CenterFace finds both faces in zidane.jpg"
    assert all(face["seen"] == [] for face in first["reid"])
    second = await _analyze(
        client, zidane_other_camera, "driveway", llm="false", timestamp=night.isoformat()
    )
    assert [[s["camera"] for s in face["seen"]] for face in second["reid"]] == [
        ["front_door"],
        ["front_door"],
    ], "both men, cropped and brightened on another camera, were on front_door"
    seen = [s for face in second["reid"] for s in face["seen"]]
    assert 290 <= seen[0]["seconds_ago"] <= 330
    assert any(f["name"] == "seen_on_other_cameras" for f in second["factors"])
    other = await _analyze(client, astronaut_jpg, "driveway", llm="false")
    assert other["reid"], "the astronaut's face is found"
    assert all(face["seen"] == [] for face in other["reid"])
    assert all(face["person_name"] is None for face in other["reid"])


@needs_shared_models("faceres.onnx")
async def test_enrolled_person_is_named_and_lowers_risk(
    client, zidane_jpg, zidane_other_camera
) -> None:
    unknown = await _analyze(client, zidane_other_camera, "patio", llm="false")
    form = aiohttp.FormData()
    form.add_field("name", "Zinedine")
    form.add_field("image", zidane_jpg, filename="z.jpg", content_type="image/jpeg")
    resp = await client.post("/v1/people", data=form)
    assert resp.status == 201, await resp.text()
    person = await resp.json()
    assert person["name"] == "Zinedine"
    assert person["embeddings"] == 1
    people = (await (await client.get("/v1/people")).json())["people"]
    assert [p["name"] for p in people] == ["Zinedine"]
    known = await _analyze(client, zidane_other_camera, "patio", llm="false")
    assert "Zinedine" in [face["person_name"] for face in known["reid"]]
    assert known["risk_score"] < unknown["risk_score"]
    duplicate = aiohttp.FormData()
    duplicate.add_field("name", "zinedine")
    duplicate.add_field("image", zidane_jpg, filename="z.jpg", content_type="image/jpeg")
    assert (await client.post("/v1/people", data=duplicate)).status == 409
    deleted = await client.delete(f"/v1/people/{person['id']}")
    assert deleted.status == 200
    assert (await (await client.get("/v1/people")).json())["people"] == []
    assert (await client.delete(f"/v1/people/{person['id']}")).status == 404


@needs_shared_models("faceres.onnx")
async def test_enrolment_needs_a_face(client, coffee_jpg) -> None:
    form = aiohttp.FormData()
    form.add_field("name", "Mug")
    form.add_field("image", coffee_jpg, filename="c.jpg", content_type="image/jpeg")
    resp = await client.post("/v1/people", data=form)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "no_face"


@pytest.mark.parametrize(
    ("params", "code", "fragment"),
    [
        ({}, "bad_parameter", "camera is required"),
        ({"camera": "Front Door"}, "bad_parameter", "camera must be"),
        ({"camera": "x" * 65}, "bad_parameter", "camera must be"),
        ({"camera": "yard", "timestamp": "yesterday"}, "bad_parameter", "ISO 8601"),
        ({"camera": "yard", "timestamp": "2026-11-23T04:00:00"}, "bad_parameter", "UTC offset"),
        (
            {"camera": "yard", "timestamp": "2099-01-01T00:00:00+00:00"},
            "bad_parameter",
            "in the future",
        ),
        (
            {"camera": "yard", "timestamp": "2001-01-01T00:00:00+00:00"},
            "bad_parameter",
            "older than the retention",
        ),
        ({"camera": "yard", "llm": "maybe"}, "bad_parameter", "llm must be"),
        ({"camera": "yard", "notify_level": "urgent"}, "bad_parameter", "notify_level"),
        ({"camera": "yard", "home_state": "{alarm"}, "bad_parameter", "home_state is not valid"),
        ({"camera": "yard", "home_state": "[1]"}, "bad_parameter", "must be a JSON object"),
        (
            {"camera": "yard", "home_state": '{"alarm": "on"}'},
            "bad_parameter",
            "home_state.alarm: 'on' is not one of",
        ),
        (
            {"camera": "yard", "home_state": '{"people_home": -2}'},
            "bad_parameter",
            "home_state.people_home",
        ),
        (
            {"camera": "yard", "home_state": '{"unlocked": "Front door"}'},
            "bad_parameter",
            "home_state.unlocked",
        ),
        ({"camera": "yard", "home_state": '{"armed": true}'}, "bad_parameter", "home_state.armed"),
    ],
)
async def test_bad_analyze_parameters(client, bus_jpg, params, code, fragment) -> None:
    resp = await client.post("/v1/analyze", params=params, data=bus_jpg, headers=JPEG)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"]["code"] == code
    assert fragment in body["error"]["message"]
    assert (await (await client.get("/v1/events")).json())["events"] == []  # nothing stored


async def test_bad_image_is_refused_and_nothing_stored(client, bus_jpg) -> None:
    resp = await client.post(
        "/v1/analyze", params={"camera": "yard"}, data=bus_jpg[:3000], headers=JPEG
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_image"
    assert (await (await client.get("/v1/events")).json())["events"] == []


async def test_unknown_camera_with_an_allowlist(
    aiohttp_client, make_settings, counting_detector, bus_jpg
) -> None:
    settings = make_settings(
        {"detector": {"warmup": False}, "analysis": {"cameras": ["front_door"]}}
    )
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    resp = await client.post(
        "/v1/analyze", params={"camera": "back_door"}, data=bus_jpg, headers=JPEG
    )
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "unknown_camera"
    ok = await client.post(
        "/v1/analyze", params={"camera": "front_door", "llm": "false"}, data=bus_jpg, headers=JPEG
    )
    assert ok.status == 200


async def test_home_state_is_evidence_and_echoed(client, zidane_jpg) -> None:
    """The same two strangers at the door by day: the home state sent with the analysis
    becomes named factors in the event and is echoed back (as a form field here, as a query
    parameter below)."""
    at = datetime(2026, 11, 23, 14, 0, tzinfo=timezone(timedelta(hours=1))).isoformat()
    plain = await _analyze(
        client, zidane_jpg, "front_door", zone="porch", llm="false", timestamp=at
    )
    assert plain["home_state"] is None
    form = aiohttp.FormData()
    home = {"alarm": "armed_away", "people_home": 0, "unlocked": ["Front door"]}
    for name, value in (
        ("camera", "front_door"),
        ("zone", "porch"),
        ("llm", "false"),
        ("timestamp", at),
        ("home_state", json.dumps(home)),
    ):
        form.add_field(name, value)
    form.add_field("image", zidane_jpg, filename="zidane.jpg", content_type="image/jpeg")
    resp = await client.post("/v1/analyze", data=form)
    assert resp.status == 200, await resp.text()
    armed = await resp.json()
    assert armed["home_state"] == home
    factors = {f["name"]: f for f in armed["factors"]}
    assert factors["alarm_armed_away"]["points"] == 25
    assert factors["alarm_armed_away"]["detail"] == "alarm armed away"
    assert factors["door_unlocked"]["detail"] == "unlocked: Front door"
    assert armed["risk_score"] == plain["risk_score"] + 35
    stored = await (await client.get(f"/v1/events/{armed['id']}")).json()
    assert stored["home_state"] == home
    guests = await _analyze(
        client,
        zidane_jpg,
        "front_door",
        llm="false",
        timestamp=at,
        home_state='{"guests_expected": true, "household_present": ["Alice"]}',
    )
    names = {f["name"] for f in guests["factors"]}
    assert {"guests_expected", "household_present"} <= names
    assert guests["risk_level"] == "low"


async def test_multipart_fields_and_unknown_event(client, bus_jpg) -> None:
    form = aiohttp.FormData()
    form.add_field("camera", "side_gate")
    form.add_field("llm", "false")
    form.add_field("notify_level", "low")
    form.add_field("image", bus_jpg, filename="bus.jpg", content_type="image/jpeg")
    event = await (await client.post("/v1/analyze", data=form)).json()
    assert event["camera"] == "side_gate"
    assert event["notify"] is True  # every level reaches "low"
    missing = await client.get("/v1/events/nope")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "unknown_event"
    assert (await client.get("/v1/events/nope/snapshot.jpg")).status == 404
    assert (await client.get("/v1/events?min_level=severe")).status == 400
    assert (await client.get("/v1/events?limit=0")).status == 400
    assert (await client.get("/v1/events?since=soon")).status == 400


async def test_analyze_with_the_real_llm(
    aiohttp_client, make_settings, counting_detector, bus_jpg, llm_requests
) -> None:
    """SmolLM2 through the supervised llama.cpp server refines the event in the background.

    The analysis answers with the rules' verdict (revision 1, pending); the same event id then
    gets revision 2 from the LLM. The LLM's bounds are hang guards (LLM_HANG_GUARDS), so the
    refinement is "done" however busy the machine is, and the kill lands while the refinement
    waits on the LLM (synchronised on the request, not on a guessed generation time).
    """
    from addon_server.reasoning.risk import level_for
    from addon_server.services import SERVICES_KEY

    # max_tokens stays the default: the answer schema's bounds are sized to fit in it (200 cut
    # a long answer mid-string: "not JSON"). llm_policy always: the bus scene's rule score is
    # not near a band boundary, and this test is about the LLM's part.
    llm = {"mode": "supervised", "ctx_size": 2048, **LLM_HANG_GUARDS}
    settings = make_settings(
        {"detector": {"warmup": False}, "llm": llm, "reasoning": {"llm_policy": "always"}}
    )
    app = create_app(settings, detector=counting_detector)
    client = await aiohttp_client(app)
    services = app[SERVICES_KEY]
    reasoner, refiner = services.reasoner, services.analyzer.refiner
    assert await reasoner.wait_ready(LLM_HANG_TIMEOUT_S), reasoner.status()
    health = await (await client.get("/health")).json()
    assert health["llm"]["state"] == "ready"
    first = await _analyze(client, bus_jpg, "front_door")
    assert (first["revision"], first["phase"], first["llm_status"]) == (1, "initial", "pending")
    assert first["llm_decision"] == {
        "asked": True,
        "reason": "policy_always",
        "detail": "reasoning.llm_policy is always",
    }
    assert first["llm_score"] is None
    await refiner.join()
    event = await (await client.get(f"/v1/events/{first['id']}")).json()
    assert (event["revision"], event["phase"]) == (2, "refined")
    assert event["llm_status"] == "done", event.get("llm_error")
    assert level_for(event["risk_score"]).value == event["risk_level"]
    assert event["summary"]
    assert event["llm_score"] is not None
    assert event["updated_at"] >= first["updated_at"]
    assert [(r["revision"], r["phase"], r["llm_status"]) for r in event["revisions"]] == [
        (1, "initial", "pending"),
        (2, "refined", "done"),
    ]
    assert event["revisions"][0]["risk_score"] == first["risk_score"]
    assert len(llm_requests) == 1

    # The LLM server dies in the middle of a refinement: revision 2 says so, the rules stand.
    server = reasoner.server
    pid, restarts = server.pid, server.restarts
    assert pid is not None
    pending = await _analyze(client, bus_jpg, "front_door")
    await eventually(lambda: len(llm_requests) == 2, "the refinement asks the LLM")
    os.kill(pid, signal.SIGKILL)
    await refiner.join()
    killed = await (await client.get(f"/v1/events/{pending['id']}")).json()
    assert (killed["revision"], killed["llm_status"]) == (2, "failed")
    # Cut off in flight (refused or reset), not a timeout, nor the not-ready shortcut.
    assert killed["llm_error"].startswith("connection: "), killed["llm_error"]
    assert level_for(killed["risk_score"]).value == killed["risk_level"]
    assert killed["risk_score"] == killed["rule_score"] == pending["risk_score"]
    assert killed["factors"]
    # ... and once the supervisor has restarted it, later events use the LLM again. The
    # refinement learns of the death from its socket, which the kernel closes before the exit
    # is reported to the supervisor: wait for the supervisor to have seen it before asking
    # whether the server is ready again.
    await eventually(lambda: server.restarts > restarts, "the supervisor sees its child die")
    assert await reasoner.wait_ready(LLM_HANG_TIMEOUT_S), reasoner.status()
    assert server.restarts == restarts + 1
    assert server.pid not in (None, pid)
    again = await _analyze(client, bus_jpg, "front_door")
    await refiner.join()
    again = await (await client.get(f"/v1/events/{again['id']}")).json()
    assert again["llm_status"] == "done", again.get("llm_error")


@needs_shared_models("faceres.onnx")
async def test_enrolled_people_survive_a_restart(
    aiohttp_client, settings, counting_detector, zidane_jpg, zidane_other_camera
) -> None:
    first = await aiohttp_client(create_app(settings, detector=counting_detector))
    form = aiohttp.FormData()
    form.add_field("name", "Zinedine")
    form.add_field("image", zidane_jpg, filename="z.jpg", content_type="image/jpeg")
    assert (await first.post("/v1/people", data=form)).status == 201
    await first.close()
    second = await aiohttp_client(create_app(settings, detector=counting_detector))
    people = (await (await second.get("/v1/people")).json())["people"]
    assert [(p["name"], p["embeddings"]) for p in people] == [("Zinedine", 1)]
    event = await _analyze(second, zidane_other_camera, "patio", llm="false")
    assert "Zinedine" in [face["person_name"] for face in event["reid"]]
