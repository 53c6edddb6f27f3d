"""The event stream's fan-out: every committed revision to every connected client.

The store tells the :class:`EventHub` of each revision it commits (:meth:`EventStore.listen`);
the hub puts it on each subscriber's own bounded queue without waiting. A client that reads
too slowly fills its queue and its stream is ended (:data:`END`) rather than
holding the others back or growing the add-on's memory: it reconnects and resumes from the
last id it got, which the store can replay, since every message's id is its revision's
``seq`` in SQLite.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from addon_server.store import StoredRevision

_LOGGER = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
"""Seconds between ``: keepalive`` comments, so proxies and clients see a live connection."""

CLIENT_QUEUE = 256
"""Revisions one client may lag behind before it is cut off (it resumes by id)."""


END = None
"""Put on a subscriber's queue to end its stream: it overflowed, or the add-on is stopping."""


@dataclass(eq=False)
class Subscription:
    """One connected client's queue of revisions (:data:`END` ends the stream)."""

    queue: asyncio.Queue[StoredRevision | None] = field(default_factory=asyncio.Queue)


class EventHub:
    """Subscribers and the revisions to hand them; lives as long as the app."""

    def __init__(self, *, client_queue: int = CLIENT_QUEUE, keepalive_s: float = KEEPALIVE_S):
        self.client_queue = client_queue
        self.keepalive_s = keepalive_s
        self._subscribers: set[Subscription] = set()

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def publish(self, revision: StoredRevision) -> None:
        """Hand ``revision`` to every subscriber; end the stream of any that is
        :attr:`client_queue` revisions behind (its queue holds at most that many plus END)."""
        for subscription in list(self._subscribers):
            if subscription.queue.qsize() >= self.client_queue:
                _LOGGER.warning(
                    "event stream client %d revisions behind: closing it (it resumes by id)",
                    self.client_queue,
                )
                self._end(subscription)
            else:
                subscription.queue.put_nowait(revision)

    def close(self) -> None:
        """Shutdown: every open stream ends."""
        for subscription in list(self._subscribers):
            self._end(subscription)

    def _end(self, subscription: Subscription) -> None:
        subscription.queue.put_nowait(END)
        self._subscribers.discard(subscription)
