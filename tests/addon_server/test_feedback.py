"""Feedback round trip on the real server: verdicts stored in SQLite calibrate the camera."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from addon_server.app import create_app
from addon_server.reasoning.calibration import Verdict
from addon_server.services import SERVICES_KEY
from addon_server.store import EventStore
from tests.addon_server.conftest import CountingDetector

TOKEN = "feedback-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JPEG = {**AUTH, "Content-Type": "image/jpeg"}
UNKNOWN_ID = "0123456789abcdef01234567"


@pytest.fixture
def settings(make_settings):
    return make_settings({"detector": {"warmup": False}, "server": {"api_token": TOKEN}})


@pytest.fixture
async def client(aiohttp_client, settings, counting_detector: CountingDetector):
    return await aiohttp_client(create_app(settings, detector=counting_detector))


async def _analyze(client, image: bytes, at: str) -> dict[str, Any]:
    resp = await client.post(
        "/v1/analyze",
        params={"camera": "front_door", "llm": "false", "timestamp": at},
        data=image,
        headers=JPEG,
    )
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def _feedback(client, event_id: str, body: Any, status: int = 200) -> dict[str, Any]:
    resp = await client.post(f"/v1/events/{event_id}/feedback", json=body, headers=AUTH)
    assert resp.status == status, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def _event(client, event_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/events/{event_id}", headers=AUTH)
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


def _calibration(event: dict[str, Any]) -> dict[str, Any] | None:
    return next((f for f in event["factors"] if f["name"] == "calibration"), None)


async def test_feedback_round_trip_calibrates_the_camera(
    client, aiohttp_client, settings, counting_detector: CountingDetector, bus_jpg: bytes
) -> None:
    first = await _analyze(client, bus_jpg, "2026-11-20T10:00:00+00:00")
    assert "feedback" not in first and _calibration(first) is None

    marked = await _feedback(client, first["id"], {"verdict": "false_alarm", "note": "the bus"})
    assert marked["feedback"]["verdict"] == "false_alarm"
    assert marked["feedback"]["note"] == "the bus"
    stored = await _event(client, first["id"])
    assert stored["feedback"] == marked["feedback"]
    listed = await (await client.get("/v1/events", headers=AUTH)).json()
    assert listed["events"][0]["feedback"] == marked["feedback"]

    # Next day, an hour later: the same pattern is damped by one similar false alarm.
    second = await _analyze(client, bus_jpg, "2026-11-21T11:00:00+00:00")
    assert _calibration(second) == {
        "name": "calibration",
        "points": -5,
        "detail": "1 similar event marked not a threat",
    }
    assert second["risk_score"] == max(0, first["risk_score"] - 5)
    # Six hours off: not similar.
    evening = await _analyze(client, bus_jpg, "2026-11-21T16:00:00+00:00")
    assert _calibration(evening) is None

    # A second verdict replaces the first: confirmed cancels the damping.
    confirmed = await _feedback(client, first["id"], {"verdict": "confirmed"})
    assert (confirmed["feedback"]["verdict"], confirmed["feedback"]["note"]) == ("confirmed", None)
    assert _calibration(await _analyze(client, bus_jpg, "2026-11-22T10:00:00+00:00")) is None

    # Reversible: "none" and DELETE withdraw it.
    await _feedback(client, first["id"], {"verdict": "false_alarm"})
    await _feedback(client, second["id"], {"verdict": "false_alarm"})
    withdrawn = await _feedback(client, second["id"], {"verdict": "none"})
    assert "feedback" not in withdrawn
    resp = await client.delete(f"/v1/events/{first['id']}/feedback", headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert "feedback" not in await resp.json()
    assert "feedback" not in await _event(client, first["id"])
    assert _calibration(await _analyze(client, bus_jpg, "2026-11-23T10:00:00+00:00")) is None

    # Stored in SQLite: a restarted add-on still calibrates from it.
    await _feedback(client, first["id"], {"verdict": "false_alarm"})
    await _feedback(client, second["id"], {"verdict": "false_alarm"})
    await client.close()
    restarted = await aiohttp_client(create_app(settings, detector=counting_detector))
    again = await _analyze(restarted, bus_jpg, "2026-11-24T09:30:00+00:00")
    assert _calibration(again) == {
        "name": "calibration",
        "points": -10,
        "detail": "2 similar events marked not a threat",
    }


BAD_BODIES: list[tuple[Any, str, str]] = [
    ({"verdict": "maybe"}, "bad_parameter", "verdict"),
    ({}, "bad_parameter", "verdict"),
    ({"verdict": "false_alarm", "note": 3}, "bad_parameter", "note"),
    ({"verdict": "false_alarm", "note": "x" * 501}, "bad_parameter", "note"),
    ({"verdict": "confirmed", "colour": "red"}, "bad_parameter", "colour"),
    ([1], "bad_json", "JSON object"),
    ("not json", "bad_json", "JSON object"),
]


async def test_bad_feedback_is_a_400_naming_the_field(client, bus_jpg: bytes) -> None:
    event = await _analyze(client, bus_jpg, "2026-11-20T10:00:00+00:00")
    for body, code, names in BAD_BODIES:
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, str) else {"json": body}
        resp = await client.post(f"/v1/events/{event['id']}/feedback", headers=AUTH, **kwargs)
        assert resp.status == 400, (body, await resp.text())
        error = (await resp.json())["error"]
        assert error["code"] == code and names in error["message"], (body, error)
    assert "feedback" not in await _event(client, event["id"])  # nothing was stored


async def test_feedback_on_an_unknown_event_is_a_404_naming_it(client) -> None:
    for method in ("POST", "DELETE"):
        resp = await client.request(
            method,
            f"/v1/events/{UNKNOWN_ID}/feedback",
            json={"verdict": "false_alarm"},
            headers=AUTH,
        )
        assert resp.status == 404, await resp.text()
        error = (await resp.json())["error"]
        assert error["code"] == "unknown_event" and UNKNOWN_ID in error["message"]


async def test_feedback_needs_the_token(client) -> None:
    resp = await client.post(f"/v1/events/{UNKNOWN_ID}/feedback", json={"verdict": "false_alarm"})
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"


def _old_store(tmp_path: Path, document: dict[str, Any], more_sql: str = "") -> EventStore:
    """A store on a database written by an older add-on: its events table holding
    ``document``, plus whatever ``more_sql`` creates."""
    path = tmp_path / "events.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE events (id TEXT PRIMARY KEY, camera TEXT NOT NULL, ts REAL NOT NULL, "
        "level_rank INTEGER NOT NULL, document TEXT NOT NULL, snapshot BLOB);" + more_sql
    )
    old.execute(
        "INSERT INTO events VALUES (?, ?, ?, 1, ?, NULL)",
        (document["id"], document["camera"], document["ts"], json.dumps(document)),
    )
    old.commit()
    old.close()
    return EventStore(path, max_age_days=30, max_events=100)


async def test_a_database_from_before_feedback_gains_the_table(tmp_path: Path) -> None:
    """An add-on upgraded in place opens its old events.db and can store feedback in it."""
    document = {
        "id": UNKNOWN_ID,
        "camera": "gate",
        "ts": 1764320000.0,
        "risk_level": "medium",
        "factors": [{"name": "person_present", "points": 10, "detail": "1 person in view"}],
    }
    store = _old_store(tmp_path, document)
    await store.open()
    try:
        event = await store.set_feedback(UNKNOWN_ID, Verdict.FALSE_ALARM, "postman")
        assert event is not None and event["feedback"]["verdict"] == "false_alarm"
        [record] = await store.feedback_on("gate")
        assert (record.verdict, record.event_ts, record.factors) == (
            Verdict.FALSE_ALARM,
            document["ts"],
            {"person_present"},
        )
        assert await store.feedback_on("front_door") == []
    finally:
        await store.close()


async def test_a_verdict_keeps_what_the_event_looked_like(
    aiohttp_client, settings, counting_detector: CountingDetector, bus_jpg: bytes
) -> None:
    """The detector classes of the judged event are stored with the verdict (calibration's
    appearance), read back from the stored event document, not from the request."""
    app = create_app(settings, detector=counting_detector)
    client = await aiohttp_client(app)
    event = await _analyze(client, bus_jpg, "2026-11-20T07:10:00+00:00")
    await _feedback(client, event["id"], {"verdict": "false_alarm"})
    [record] = await app[SERVICES_KEY].store.feedback_on("front_door")
    assert record.appearance == {d["class"] for d in event["detections"]} == {"person", "bus"}


async def test_a_feedback_table_from_before_appearance_gains_the_column(tmp_path: Path) -> None:
    """An older database's verdicts read back without looks (compared as before); new ones
    get them."""
    document = {
        "id": UNKNOWN_ID,
        "camera": "gate",
        "ts": 1764320000.0,
        "factors": [{"name": "pets_only", "points": -10, "detail": "only animals: cat"}],
        "detections": [{"class": "cat", "confidence": 0.9, "bbox": {}}],
    }
    store = _old_store(
        tmp_path,
        document,
        "CREATE TABLE feedback (event_id TEXT PRIMARY KEY, camera TEXT NOT NULL, "
        "verdict TEXT NOT NULL, ts REAL NOT NULL, note TEXT, event_ts REAL NOT NULL, "
        "factors TEXT NOT NULL);"
        "INSERT INTO feedback VALUES ('old', 'gate', 'false_alarm', 1.0, NULL, 1.0, "
        "'[\"pets_only\"]');",
    )
    await store.open()
    try:
        await store.set_feedback(UNKNOWN_ID, Verdict.FALSE_ALARM)
        looks = {r.event_ts: r.appearance for r in await store.feedback_on("gate")}
        assert looks == {1.0: None, document["ts"]: {"cat"}}
    finally:
        await store.close()
