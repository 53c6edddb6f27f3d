"""Every error the API answers with, as one JSON shape: ``{"error": {"code", "message"}}``.

Handlers raise :class:`ApiError`; the middleware turns it — and aiohttp's own HTTP exceptions
such as 413 for an oversized body — into that shape, so no client ever has to parse HTML.
Requests aiohttp cannot even parse never reach a middleware; :mod:`addon_server.server` answers
those with the same shape, through :func:`error_response` and :func:`http_error_code`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from addon_server.metrics import Metrics
from addon_server.store import StorageError, StorageFullError

_LOGGER = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
METRICS_KEY = web.AppKey("metrics", Metrics)


class ApiError(Exception):
    """An error to send to the client."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


INTERNAL_ERROR_MESSAGE = "internal server error; see the add-on log"


def http_error_code(status: int) -> str:
    """The error code for a status aiohttp chose (``method_not_allowed`` for 405, ...)."""
    return _HTTP_CODES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_"))


def _passed_on_headers(err: web.HTTPException) -> dict[str, str]:
    """The exception's own headers (``Allow`` on a 405), without those that describe its body."""
    return {
        name: value
        for name, value in err.headers.items()
        if name.lower() not in ("content-type", "content-length")
    }


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render ApiError and aiohttp HTTP errors as JSON; log and hide unexpected failures."""
    metrics = request.app[METRICS_KEY]
    try:
        return await handler(request)
    except ApiError as err:
        metrics.http_errors.labels(err.code).inc()
        return error_response(err.status, err.code, err.message, err.headers)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        code = http_error_code(err.status)
        message = err.text or err.reason
        if err.status == 413:
            message = f"request body too large: {err.text}"
        elif err.status == 404:
            message = f"no route for {request.method} {request.path}"
        elif err.status == 405:
            allowed = err.headers.get("Allow", "")
            message = f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
        metrics.http_errors.labels(code).inc()
        return error_response(err.status, code, message, _passed_on_headers(err))
    except StorageError as err:  # the disk, not the request: 507 when full, else 503
        metrics.http_errors.labels(err.code).inc()
        return error_response(507 if isinstance(err, StorageFullError) else 503, err.code, str(err))
    except Exception as err:
        if isinstance(err, ConnectionError) and request.transport is None:
            # The client hung up, or the server dropped it for sending too slowly
            # (server.read_timeout_s): nobody is left to answer, and it is no server fault.
            _LOGGER.debug("client left during %s %s: %s", request.method, request.path, err)
            metrics.http_errors.labels("client_disconnected").inc()
            return error_response(400, "client_disconnected", "the client closed the connection")
        _LOGGER.exception("unhandled error on %s %s", request.method, request.path)
        metrics.http_errors.labels("internal_error").inc()
        return error_response(500, "internal_error", INTERNAL_ERROR_MESSAGE)
