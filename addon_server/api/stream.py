"""``GET /v1/events/stream``: every stored revision of every event, as server-sent events.

Each message is one revision as the store committed it (``id:`` its ``seq``, ``event:
risk_event``, ``data:`` the event document): an analysis gives one message at once and, when the
LLM refines it, a second with the same event id and ``revision: 2``. Ids are stored in SQLite
and never reused, so a client that lost its connection — or the add-on, restarted — resumes
with ``Last-Event-ID`` (what browsers send on their own) or ``?after=`` and misses nothing that
retention kept. Without either, the stream starts with the next revision; its first message
is an ``id:`` alone (no event), the position to resume from.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from addon_server.api.errors import ApiError
from addon_server.api.routes import STORAGE_UNAVAILABLE, Route, error, header, query
from addon_server.api.schemas import STRING
from addon_server.services import SERVICES_KEY
from addon_server.store import StoredRevision

EVENT_NAME = "risk_event"
BACKLOG_PAGE = 100
KEEPALIVE = b": keepalive\n\n"


def _after(request: web.Request) -> int | None:
    """Where to resume: ``?after=`` if given, else the ``Last-Event-ID`` header, else None."""
    raw = request.query.get("after")
    name = "after"
    if raw is None:
        raw, name = request.headers.get("Last-Event-ID"), "Last-Event-ID"
    if raw is None or (name == "Last-Event-ID" and not raw.strip()):
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ApiError(
            400, "bad_parameter", f"{name} must be a stream id (an integer >= 0), got {raw!r}"
        )
    return value


def message(revision: StoredRevision) -> bytes:
    """One server-sent event; the JSON is on one ``data:`` line (it holds no newline)."""
    data = json.dumps(revision.document, separators=(",", ":"))
    return f"id: {revision.seq}\nevent: {EVENT_NAME}\ndata: {data}\n\n".encode()


async def stream_events(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES_KEY]
    store, hub = services.store, services.hub
    after = _after(request)
    subscription = hub.subscribe()  # before reading the backlog: nothing falls in between
    try:
        last = await store.last_seq() if after is None else after
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # a reverse proxy must not hold messages back
            }
        )
        await response.prepare(request)
        # An id without data: the client knows at once that it is connected, and where it
        # stands, so it can resume from here even if nothing happens before a restart.
        await response.write(f"id: {last}\n\n".encode())
        while True:  # the stored backlog, page by page
            page = await store.revisions_after(last, BACKLOG_PAGE)
            for revision in page:
                await response.write(message(revision))
                last = revision.seq
            if len(page) < BACKLOG_PAGE:
                break
        while True:
            try:
                live = await asyncio.wait_for(subscription.queue.get(), hub.keepalive_s)
            except TimeoutError:
                await response.write(KEEPALIVE)
                continue
            if live is None:  # END: overflowed, or the add-on is stopping
                break
            if live.seq > last:  # the backlog may already have sent it
                await response.write(message(live))
                last = live.seq
    except ConnectionError:
        pass  # the client went away; it resumes by id
    finally:
        hub.unsubscribe(subscription)
    return response


ROUTES = [
    Route(
        "GET",
        "/v1/events/stream",
        stream_events,
        "Every stored event revision as server-sent events (resumable by id)",
        "stream_events",
        parameters=(
            query(
                "after",
                "Resume after this stream id (as the Last-Event-ID header does); "
                "without either the stream starts with the next revision",
                {"type": "integer", "minimum": 0},
            ),
        ),
        responses={
            "200": {
                "description": (
                    "text/event-stream: one message per stored revision, `id:` its stream "
                    f"id, `event: {EVENT_NAME}`, `data:` the Event JSON (see the Event schema); "
                    "a `: keepalive` comment every 15 s"
                ),
                "content": {"text/event-stream": {"schema": STRING}},
                "headers": {"Cache-Control": header("no-cache", STRING)},
            },
            "400": error("after or Last-Event-ID is not a stream id"),
            "503": STORAGE_UNAVAILABLE,
        },
        tags=("events",),
    ),
]
