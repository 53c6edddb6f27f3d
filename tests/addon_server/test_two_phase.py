"""Two-phase events and the event stream, through the real app on loopback.

The analysis answers with the rules' verdict (revision 1); the LLM refines the same event in
the background (revision 2); ``GET /v1/events/stream`` carries both, resumable by id across an
add-on restart. The LLM here is a small OpenAI-compatible aiohttp server (as in
test_reasoning_llm_client.py), so the phases are reproducible in milliseconds; SmolLM2 itself
refines an event in test_analyze.py::test_analyze_with_the_real_llm.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from addon_server.app import create_app
from addon_server.refinement import RESTARTED, STOPPED
from addon_server.services import SERVICES_KEY
from addon_server.store import EventStore, StoredRevision
from addon_server.stream import END, EventHub
from tests.addon_server.conftest import HANG_TIMEOUT_S, LLM_HANG_GUARDS, eventually
from tests.addon_server.reasoning.test_reasoning_llm_client import Start, fake_llm
from tests.addon_server.reasoning.test_reasoning_llm_client import (
    start as start,  # noqa: PLC0414 (the fixture, registered under its own name)
)

JPEG = {"Content-Type": "image/jpeg"}
TOKEN = "stream-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

Message = tuple[int, str, dict[str, Any]]


async def read_messages(resp: Any, count: int) -> list[Message]:
    """``count`` server-sent events (id, event name, JSON data); comments are skipped."""
    messages: list[Message] = []
    fields: dict[str, str] = {}
    while len(messages) < count:
        raw = await asyncio.wait_for(resp.content.readline(), HANG_TIMEOUT_S)
        assert raw, "the stream ended"
        line = raw.decode().rstrip("\n")
        if not line:
            if "data" in fields:
                messages.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return messages


async def llm_settings(make_settings: Any, start: Start, behaviour: str) -> Any:
    seen: list[dict[str, Any]] = []
    server = await start(fake_llm(behaviour, seen))
    settings = make_settings(
        {
            "server": {"api_token": TOKEN},
            "detector": {"warmup": False},
            "llm": {"mode": "external", **LLM_HANG_GUARDS},
            "reasoning": {"llm_policy": "always"},
        },
        LLM_URL=str(server.make_url("/v1")),
    )
    return settings, seen


async def analyze(client: Any, image: bytes, **params: str) -> dict[str, Any]:
    resp = await client.post(
        "/v1/analyze",
        params={"camera": "front_door", **params},
        data=image,
        headers={**JPEG, **AUTH},
    )
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def test_both_phases_reach_the_stream_in_order_and_the_store_keeps_both(
    aiohttp_client: Any, make_settings: Any, counting_detector: Any, bus_jpg: bytes, start: Start
) -> None:
    settings, seen = await llm_settings(make_settings, start, "good")
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    stream = await client.get("/v1/events/stream", headers=AUTH)
    assert stream.status == 200
    assert stream.content_type == "text/event-stream"

    first = await analyze(client, bus_jpg)
    assert (first["revision"], first["phase"], first["llm_status"]) == (1, "initial", "pending")
    assert first["llm_decision"]["reason"] == "policy_always"
    (id1, name1, initial), (id2, name2, refined) = await read_messages(stream, 2)
    assert name1 == name2 == "risk_event"
    assert id1 < id2
    assert initial["id"] == refined["id"] == first["id"]
    assert (initial["revision"], initial["phase"], initial["llm_status"]) == (
        1,
        "initial",
        "pending",
    )
    assert (refined["revision"], refined["phase"], refined["llm_status"]) == (2, "refined", "done")
    assert refined["llm_score"] == 72  # the fake LLM's answer, blended
    assert refined["risk_score"] >= refined["rule_score"] - 15  # the 15-point cap holds
    assert refined["updated_at"] >= initial["updated_at"]
    assert len(seen) == 1
    stream.close()

    stored = await (await client.get(f"/v1/events/{first['id']}", headers=AUTH)).json()
    assert stored["revision"] == 2
    assert [(r["revision"], r["risk_score"], r["llm_status"]) for r in stored["revisions"]] == [
        (1, initial["risk_score"], "pending"),
        (2, refined["risk_score"], "done"),
    ]
    listed = (await (await client.get("/v1/events", headers=AUTH)).json())["events"]
    assert [(e["id"], e["revision"]) for e in listed] == [(first["id"], 2)]

    # Resume: Last-Event-ID (what a browser sends) and ?after= replay from the store.
    resumed = await client.get("/v1/events/stream", headers={**AUTH, "Last-Event-ID": str(id1)})
    assert [m[0] for m in await read_messages(resumed, 1)] == [id2]
    resumed.close()
    replay = await client.get("/v1/events/stream", params={"after": "0"}, headers=AUTH)
    assert [(m[0], m[2]["revision"]) for m in await read_messages(replay, 2)] == [
        (id1, 1),
        (id2, 2),
    ]
    replay.close()


async def test_the_stream_resumes_across_an_addon_restart(
    aiohttp_client: Any, make_settings: Any, counting_detector: Any, bus_jpg: bytes
) -> None:
    settings = make_settings({"server": {"api_token": TOKEN}, "detector": {"warmup": False}})
    before = await aiohttp_client(create_app(settings, detector=counting_detector))
    skipped = await analyze(before, bus_jpg, llm="false")
    assert (skipped["llm_status"], skipped["llm_decision"]["reason"]) == ("skipped", "request_off")
    stream = await before.get("/v1/events/stream", params={"after": "0"}, headers=AUTH)
    [(last_id, _, seen)] = await read_messages(stream, 1)
    assert seen["id"] == skipped["id"]
    stream.close()
    await before.close()  # the add-on stops; the client keeps the last id it saw

    after = await aiohttp_client(create_app(settings, detector=counting_detector))
    resumed = await after.get("/v1/events/stream", headers={**AUTH, "Last-Event-ID": str(last_id)})
    new = await analyze(after, bus_jpg, llm="false")
    [(next_id, _, doc)] = await read_messages(resumed, 1)
    assert doc["id"] == new["id"]
    assert next_id > last_id  # ids are stored: a restart never hands one out twice
    resumed.close()


async def test_refinements_left_unfinished_are_failed_at_shutdown_and_at_start(
    aiohttp_client: Any,
    make_settings: Any,
    counting_detector: Any,
    bus_jpg: bytes,
    start: Start,
    tmp_path: Any,
) -> None:
    settings, seen = await llm_settings(make_settings, start, "slow")  # never answers
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    pending = await analyze(client, bus_jpg)
    assert pending["llm_status"] == "pending"
    await eventually(lambda: len(seen) == 1, "the refinement asks the LLM")
    await client.close()  # shutdown with the refinement in flight

    store = EventStore(settings.store.path, max_age_days=1, max_events=10)
    await store.open()
    try:
        stopped = await store.get_event(pending["id"])
        assert stopped is not None
        assert (stopped["revision"], stopped["llm_status"]) == (2, "failed")
        assert stopped["llm_error"] == STOPPED
        # A crash leaves an event pending: the next start fails it.
        crashed = {**pending, "id": "0" * 24, "timings_ms": {}}
        await store.add_event(crashed, None)
        assert [e["id"] for e in await store.pending_events()] == [crashed["id"]]
    finally:
        await store.close()
    again = await aiohttp_client(create_app(settings, detector=counting_detector))
    event = await (await again.get(f"/v1/events/{crashed['id']}", headers=AUTH)).json()
    assert (event["revision"], event["phase"], event["llm_status"]) == (2, "refined", "failed")
    assert event["llm_error"] == RESTARTED
    assert [r["llm_status"] for r in event["revisions"]] == ["pending", "failed"]


async def test_stream_auth_bad_ids_keepalive_and_cleanup(
    aiohttp_client: Any, make_settings: Any, counting_detector: Any
) -> None:
    settings = make_settings({"server": {"api_token": TOKEN}, "detector": {"warmup": False}})
    app = create_app(settings, detector=counting_detector)
    hub = app[SERVICES_KEY].hub
    hub.keepalive_s = 0.05
    client = await aiohttp_client(app)
    assert (await client.get("/v1/events/stream")).status == 401
    for params, headers in (({"after": "soon"}, {}), ({}, {"Last-Event-ID": "-3"})):
        bad = await client.get("/v1/events/stream", params=params, headers={**AUTH, **headers})
        assert bad.status == 400
        assert (await bad.json())["error"]["code"] == "bad_parameter"
    stream = await client.get("/v1/events/stream", headers=AUTH)
    lines = [await asyncio.wait_for(stream.content.readline(), HANG_TIMEOUT_S) for _ in range(6)]
    # The position first (an id without an event: nothing stored yet), then keepalives.
    assert lines == [b"id: 0\n", b"\n", b": keepalive\n", b"\n", b": keepalive\n", b"\n"]
    assert hub.clients == 1
    stream.close()  # the client goes away: its subscription goes with it
    await eventually(lambda: hub.clients == 0, "the stream handler notices the disconnect")


def test_a_slow_client_is_cut_off_without_holding_back_the_others() -> None:
    hub = EventHub(client_queue=2)
    slow, fast = hub.subscribe(), hub.subscribe()
    got: list[int] = []
    for seq in range(1, 5):
        hub.publish(StoredRevision(seq, {"id": "e", "revision": 1}))
        item = fast.queue.get_nowait()
        assert item is not None
        got.append(item.seq)
    assert got == [1, 2, 3, 4]
    assert hub.clients == 1  # the slow one was dropped ...
    drained = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
    assert [r.seq if r is not None else r for r in drained] == [1, 2, END]  # ... and told so


async def test_store_revision_ids_are_monotonic_and_trimmed_with_their_event(
    tmp_path: Any,
) -> None:
    store = EventStore(tmp_path / "events.db", max_age_days=1, max_events=1)
    await store.open()
    try:
        doc = {"camera": "c", "risk_level": "low", "factors": [], "summary": "", "revision": 1}
        a = await store.add_event({**doc, "id": "a", "ts": 1_000_000_000.0}, None)
        b = await store.add_event({**doc, "id": "b", "ts": 1_000_000_001.0}, None)
        assert (a.seq, b.seq) == (1, 2)
        assert await store.get_event("a") is None  # trimmed to max_events=1 ...
        assert [r.seq for r in await store.revisions_after(0)] == [2]  # ... with its revision
        assert await store.add_revision({**doc, "id": "a", "revision": 2, "ts": 1.0}) is None
        refined = await store.add_revision({**doc, "id": "b", "ts": 1_000_000_001.0, "revision": 2})
        assert refined is not None and refined.seq == 3
        again = {**doc, "id": "b", "ts": 1_000_000_001.0, "revision": 2}
        assert await store.add_revision(again) is None  # a revision is stored once
        assert await store.last_seq() == 3
    finally:
        await store.close()
