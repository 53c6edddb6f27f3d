"""The HTTP edge: how the add-on listens, and what happens to a connection before the app sees it.

``vigil-addon serve`` and the tests both build the server with :func:`start`, so what the tests
check is what runs. aiohttp's Application only sees a request once it has been parsed; these
happen before that, in aiohttp's connection protocol (``web_protocol.RequestHandler``):

* **Unparsable requests** (a bad request line, oversized or too many headers, a bad
  Content-Length, NUL or CR in a header) are answered by ``RequestHandler.handle_error``,
  beyond every middleware, as text/plain. aiohttp 3.14 has no hook for them (aio-libs/aiohttp
  #3287), so :class:`_Connection`, a RequestHandler subclass, answers them in the API's JSON
  error shape. aiohttp's Server builds plain RequestHandlers and the AppRunner builds that
  Server, so :class:`_Runner` keeps the Server's request handler and factory (the
  Application's) and serves them with :class:`_Server`, whose connections are ``_Connection``.
* **Idle connections** are closed after ``keepalive_timeout_s``. aiohttp starts that timer when
  a connection opens, so a connection that never sends a request is closed too.
* **Slow clients**: a request's line, headers and body must arrive within ``read_timeout_s`` of
  its first byte, or the connection is dropped (slowloris, headers or body a byte at a time).
* **Too many connections**: at ``max_connections`` (kept below the open-file limit) a new
  connection closes the longest-idle one; when none is idle, the new one is closed at once.
  File descriptors never run out, and clients that are being served keep being served.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpProcessingError, RawRequestMessage

from addon_server.api.errors import (
    INTERNAL_ERROR_MESSAGE,
    METRICS_KEY,
    error_response,
    http_error_code,
)
from addon_server.config import ServerSettings
from addon_server.metrics import Metrics

_LOGGER = logging.getLogger(__name__)
FDS_IN_RESERVE = 64
"""Files the add-on needs besides its connections: models, the database, logs, the LLM's pipes."""
_MAX_MESSAGE = 200

RequestFactory = Callable[
    [
        RawRequestMessage,
        StreamReader,
        web.RequestHandler,
        AbstractStreamWriter,
        "asyncio.Task[None]",
    ],
    web.BaseRequest,
]


def connection_cap(configured: int) -> int:
    """``configured``, lowered to fit this process's open-file limit (with a reserve)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or configured <= soft - FDS_IN_RESERVE:
        return configured
    capped = max(1, soft - FDS_IN_RESERVE)
    _LOGGER.warning(
        "server.max_connections %d does not fit the open-file limit %d: serving at most %d",
        configured,
        soft,
        capped,
    )
    return capped


class _Connection(web.RequestHandler):
    """One client connection: JSON parse errors, a deadline per request, and idleness."""

    __slots__ = ("_body", "_deadline", "_edge", "_idle")

    def __init__(self, edge: _Server, **kwargs: Any) -> None:
        super().__init__(edge, **kwargs)
        self._edge = edge
        self._idle = True
        self._deadline: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None

    @property
    def idle(self) -> bool:
        """Nothing received since the last response (or since the connection opened)."""
        return self._idle

    def data_received(self, data: bytes) -> None:
        if data and self._idle:
            # The first byte of a request starts its clock.
            self._idle = False
            self._deadline = asyncio.get_running_loop().call_later(
                self._edge.settings.read_timeout_s, self._read_timed_out
            )
        super().data_received(data)

    def headers_received(self, body: StreamReader) -> None:
        """The request line and headers are in; from now on only the body can be late."""
        self._body = body

    def _read_timed_out(self) -> None:
        self._deadline = None
        if self._body is None or not self._body.is_eof():
            _LOGGER.debug(
                "dropping %s: request not received within %.1f s",
                self.peername,
                self._edge.settings.read_timeout_s,
            )
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._body = None
        self._idle = False  # until the response is out, the connection is not idle
        result = await super().finish_response(request, resp, start_time)
        # A client that pipelines sends its next request early; the rare one that does so at
        # the connection cap may see that request's connection closed, and must retry.
        self._idle = True
        return result

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer in the API's JSON error shape what aiohttp answers as text/plain."""
        if request.writer.output_size > 0:
            # A response has started: another cannot be sent (aiohttp does the same).
            raise ConnectionError("response already started; cannot send an error")
        code = http_error_code(status)
        if status >= 500:
            self.log_exception("error handling request from %s", request.remote, exc_info=exc)
            text = INTERNAL_ERROR_MESSAGE if status == 500 else HTTPStatus(status).phrase
        else:
            # Clients (and port scanners) send garbage; it is theirs, not the server's, to fix.
            _LOGGER.debug("unparsable request from %s: %s", request.remote, exc)
            detail = message or (exc.message if isinstance(exc, HttpProcessingError) else "")
            text = f"malformed HTTP request: {detail or HTTPStatus(status).phrase}"
        if self._edge.metrics is not None:
            self._edge.metrics.http_errors.labels(code).inc()
        response = error_response(status, code, text[:_MAX_MESSAGE])
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's Server, serving :class:`_Connection` and keeping the connection cap."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        request_factory: RequestFactory,
        settings: ServerSettings,
        metrics: Metrics | None,
    ) -> None:
        self._protocol_args: dict[str, Any] = {
            "keepalive_timeout": settings.keepalive_timeout_s,
            "access_log": None,
        }
        super().__init__(handler, request_factory=self._start_request, **self._protocol_args)
        self._app_request = request_factory
        self.settings = settings
        self.metrics = metrics
        self.max_connections = connection_cap(settings.max_connections)
        self._open: dict[web.RequestHandler, None] = {}  # in the order they opened
        self._at_cap = False

    def __call__(self) -> _Connection:
        return _Connection(self, loop=asyncio.get_running_loop(), **self._protocol_args)

    def _start_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if isinstance(protocol, _Connection):
            protocol.headers_received(payload)
        return self._app_request(message, payload, protocol, writer, task)

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._open[handler] = None
        if len(self._open) <= self.max_connections:
            self._at_cap = False
            return
        if not self._at_cap:
            self._at_cap = True
            _LOGGER.warning(
                "%d connections open (server.max_connections): closing idle ones", len(self._open)
            )
        idle = (c for c in self._open if isinstance(c, _Connection) and c.idle and c is not handler)
        victim = next(idle, handler)
        del self._open[victim]
        victim.force_close()

    def connection_lost(
        self, handler: web.RequestHandler, exc: BaseException | None = None
    ) -> None:
        self._open.pop(handler, None)
        super().connection_lost(handler, exc)


class _Runner(web.AppRunner):
    """An AppRunner that serves the Application through :class:`_Server`."""

    __slots__ = ("_settings",)

    def __init__(self, app: web.Application, settings: ServerSettings) -> None:
        super().__init__(app, access_log=None)
        self._settings = settings

    async def _make_server(self) -> web.Server:
        # The base class starts the Application and builds aiohttp's Server around the
        # Application's handler and request factory; serve those through ours instead.
        plain = await super()._make_server()
        return _Server(
            plain.request_handler,
            plain.request_factory,
            self._settings,
            self.app.get(METRICS_KEY),
        )


async def start(app: web.Application, settings: ServerSettings) -> web.AppRunner:
    """Start serving ``app`` on ``settings.host:port``; the caller cleans the runner up."""
    runner = _Runner(app, settings)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def serve(app: web.Application, settings: ServerSettings) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly (in-flight requests finish first)."""

    async def main() -> None:
        runner = await start(app, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
