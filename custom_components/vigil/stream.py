"""The add-on's event stream, followed for one config entry.

Every revision the add-on stores (the rules' verdict at once, the LLM's refinement seconds
later) arrives here and is handed to the camera's coordinator, which publishes each
(event, revision) once. One long-lived task per config entry, started at setup and cancelled
at unload or when Home Assistant stops; it reconnects with a growing delay and resumes after
the last stream id it saw, so an add-on restart loses nothing retention kept.

The task is the entry's but deliberately not one of Home Assistant's tracked background tasks:
it never finishes, and `async_block_till_done(wait_background_tasks=True)` would wait for it
forever; its end is owned here instead (unload, stop).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import Event, HomeAssistant, callback

from .api import AnalysisEvent, VigilAuthenticationError, VigilClient, VigilError
from .const import LOGGER

BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0


class VigilEventStream:
    """Follows GET /v1/events/stream and dispatches each revision."""

    def __init__(
        self,
        hass: HomeAssistant,
        client: VigilClient,
        dispatch: Callable[[AnalysisEvent], None],
        on_auth_failed: Callable[[], None],
    ) -> None:
        """Initialize; `dispatch` is called on the event loop for each revision."""
        self.hass = hass
        self.client = client
        self._dispatch = dispatch
        self._on_auth_failed = on_auth_failed
        self.last_id: int | None = None
        """The last stream id seen: where a reconnection resumes."""
        self.connections = 0
        """How many times the stream was (re)connected: each answer's first message counts."""
        self._task: asyncio.Task[None] | None = None

    @callback
    def async_start(self, entry: ConfigEntry) -> None:
        """Follow the stream until the entry unloads or Home Assistant stops."""
        self._task = self.hass.loop.create_task(self.async_run(), name="vigil event stream")

        @callback
        def _on_stop(_: Event) -> None:
            self.async_cancel()

        entry.async_on_unload(self.hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _on_stop))
        entry.async_on_unload(self.async_stop)

    @callback
    def async_cancel(self) -> None:
        """Cancel the task (it ends at its next await)."""
        if self._task is not None:
            self._task.cancel()

    async def async_stop(self) -> None:
        """Cancel the task and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def async_run(self) -> None:
        """Follow the stream until cancelled (or the token is refused: reauth)."""
        delay = BACKOFF_INITIAL_S
        while True:
            connected = False
            try:
                async for seq, event in self.client.stream_events(self.last_id):
                    if not connected:
                        connected = True
                        self.connections += 1
                    self.last_id = seq
                    delay = BACKOFF_INITIAL_S  # connected and fed: a later drop retries soon
                    if event is not None:
                        self._dispatch(event)
                LOGGER.debug("event stream ended (add-on stopping?); reconnecting")
            except VigilAuthenticationError:
                self._on_auth_failed()
                return
            except VigilError as err:
                LOGGER.debug("event stream: %s; reconnecting in %.0f s", err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
