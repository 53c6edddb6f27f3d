"""The add-on's event stream in the integration: the client's parser over real HTTP, and the
entry's stream task feeding both phases of an event to the entities and the bus."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from unittest.mock import MagicMock

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from custom_components.vigil.api import (
    AnalysisEvent,
    VigilAuthenticationError,
    VigilClient,
    VigilConnectionError,
)
from custom_components.vigil.const import EVENT_RISK
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import STATE_ON
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from .conftest import TRIGGER_ENTITY, load_json

TOKEN = "t0ken"
EVENT = load_json("event.json")
EVENT_ENTITY = "event.front_door_risk_event"
REFINED = EVENT | {
    "revision": 2,
    "phase": "refined",
    "llm_status": "done",
    "risk_score": EVENT["risk_score"] - 5,
    "summary": "Refined by the model",
}
HANG_GUARD_S = 60.0


# ---------------------------------------------------------------- the client's parser


@pytest.fixture
async def sse_server(socket_enabled: None) -> AsyncGenerator[tuple[list[Any], TestServer]]:
    """An add-on stand-in whose stream sends a position, a keepalive, two revisions, then ends."""
    seen: list[Any] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response(
                {"error": {"code": "unauthorized", "message": "wrong token"}}, status=401
            )
        seen.append(request.headers.get("Last-Event-ID"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        data = json.dumps(EVENT)
        await resp.write(b"id: 5\n\n: keepalive\n\n")
        # Split mid-line: the client must join chunks before it parses lines.
        message = f"id: 6\nevent: risk_event\ndata: {data}\n\n".encode()
        await resp.write(message[:40])
        await resp.write(message[40:])
        await resp.write(f"id: 7\nevent: risk_event\ndata: {json.dumps(REFINED)}\n\n".encode())
        return resp

    app = web.Application()
    app.router.add_get("/v1/events/stream", stream)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield seen, server
    await server.close()


async def test_client_parses_the_event_stream(sse_server: tuple[list[Any], TestServer]) -> None:
    seen, server = sse_server
    async with ClientSession() as session:
        client = VigilClient(session, host="127.0.0.1", port=server.port, token=TOKEN)
        got = [(seq, e and (e.id, e.revision, e.phase)) async for seq, e in client.stream_events(4)]
        assert got == [
            (5, None),
            (6, (EVENT["id"], 1, "initial")),
            (7, (EVENT["id"], 2, "refined")),
        ]
        assert seen == ["4"]  # resumed with Last-Event-ID
        wrong = VigilClient(session, host="127.0.0.1", port=server.port, token="nope")
        with pytest.raises(VigilAuthenticationError):
            async for _ in wrong.stream_events():
                pass


# ---------------------------------------------------------------- the entry's stream task


class StreamFeed:
    """Plays the add-on's stream: the test puts messages (or an error) on the queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.calls: list[int | None] = []
        self.closed = 0

    async def stream_events(
        self, after: int | None = None
    ) -> AsyncIterator[tuple[int, AnalysisEvent | None]]:
        self.calls.append(after)
        try:
            while True:
                item = await self.queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed += 1


@pytest.fixture
def feed(mock_vigil_client: MagicMock) -> StreamFeed:
    """Set before the integration: the entry's stream task reads this feed."""
    stream = StreamFeed()
    mock_vigil_client.stream_events = stream.stream_events
    return stream


async def wait_until(hass: HomeAssistant, check: Any, what: str) -> None:
    """A hang guard, never a speed expectation."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
    await hass.async_block_till_done()


async def test_both_phases_fire_once_each_and_the_stream_resumes(
    hass: HomeAssistant,
    feed: StreamFeed,
    init_integration: MockConfigEntry,
    mock_vigil_client: MagicMock,
) -> None:
    bus = async_capture_events(hass, EVENT_RISK)
    fired: list[tuple[str, int, str]] = []

    def on_state(event: Any) -> None:
        state = event.data["new_state"]
        if state is not None and "phase" in state.attributes:
            fired.append(
                (
                    state.attributes["event_id"],
                    state.attributes["revision"],
                    state.attributes["phase"],
                )
            )

    hass.bus.async_listen("state_changed", on_state)
    await wait_until(hass, lambda: feed.calls == [None], "the stream task to connect")

    # The trigger: the analysis answers with revision 1 ...
    hass.states.async_set(TRIGGER_ENTITY, STATE_ON, {"device_class": "motion"})
    await hass.async_block_till_done()
    assert fired == [(EVENT["id"], 1, "initial")]
    # ... which the stream brings too (no second fire), then the LLM's revision 2.
    feed.queue.put_nowait((1, None))
    feed.queue.put_nowait((2, AnalysisEvent.from_dict(EVENT)))
    feed.queue.put_nowait((3, AnalysisEvent.from_dict(REFINED)))
    await wait_until(hass, lambda: len(fired) == 2, "the refinement to fire")
    assert fired == [(EVENT["id"], 1, "initial"), (EVENT["id"], 2, "refined")]
    assert [(e.data["event_id"], e.data["revision"], e.data["phase"]) for e in bus] == fired
    assert hass.states.get("sensor.front_door_risk_score").state == str(REFINED["risk_score"])
    assert hass.states.get(EVENT_ENTITY).attributes["summary"] == "Refined by the model"

    # The add-on goes away (a restart): the task reconnects and resumes after the last id.
    feed.queue.put_nowait(VigilConnectionError("connection reset", code="cannot_connect"))
    await wait_until(hass, lambda: len(feed.calls) == 2, "the stream task to reconnect")
    assert feed.calls == [None, 3]

    # Unloading the entry ends the task (and so the stream).
    assert await hass.config_entries.async_unload(init_integration.entry_id)
    await hass.async_block_till_done()
    assert init_integration.state is ConfigEntryState.NOT_LOADED
    await wait_until(hass, lambda: feed.closed == 2, "the stream to close")


async def test_a_late_or_older_revision_never_replaces_a_newer_event(
    hass: HomeAssistant, feed: StreamFeed, init_integration: MockConfigEntry
) -> None:
    """Revision 1 after revision 2 is dropped; an older event's refinement only goes on the
    bus (the entities keep showing the newer event)."""
    bus = async_capture_events(hass, EVENT_RISK)
    coordinator = next(iter(init_integration.runtime_data.cameras.values()))
    newer = EVENT | {"id": "0123456789ab0000000000ee", "summary": "Newer"}
    assert coordinator.async_publish(AnalysisEvent.from_dict(REFINED))
    assert not coordinator.async_publish(AnalysisEvent.from_dict(EVENT))  # late revision 1
    assert coordinator.async_publish(AnalysisEvent.from_dict(newer))
    older_refined = REFINED | {"revision": 3, "summary": "Older, refined again"}
    assert coordinator.async_publish(AnalysisEvent.from_dict(older_refined))
    await hass.async_block_till_done()
    assert coordinator.data.id == newer["id"]
    assert hass.states.get(EVENT_ENTITY).attributes["summary"] == "Newer"
    assert [(e.data["event_id"], e.data["revision"]) for e in bus] == [
        (EVENT["id"], 2),
        (newer["id"], 1),
        (EVENT["id"], 3),
    ]
