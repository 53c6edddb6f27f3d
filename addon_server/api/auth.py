"""Bearer-token authentication for every route except /health.

/health stays open so Home Assistant's config flow and uptime checks can tell "unreachable" from
"wrong token". Tokens are compared with :func:`hmac.compare_digest` so response timing does not
leak how much of a guess was right. aiohttp decodes header bytes that are not UTF-8 to lone
surrogates, which a plain ``str.encode`` refuses; ``surrogatepass`` encodes any string, and a
surrogate's bytes are never valid UTF-8, so such a header can only be a wrong token (401).
"""

from __future__ import annotations

import hmac

from aiohttp import web

from addon_server.api.errors import ApiError, Handler

OPEN_PATHS = frozenset({"/health"})


def auth_middleware(token: str | None) -> web.middleware:  # type: ignore[valid-type]
    """Build the middleware; with no token configured every request passes."""
    expected = token.encode() if token else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or request.path in OPEN_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() != "bearer" or not supplied:
            raise ApiError(
                401,
                "unauthorized",
                "missing bearer token: send 'Authorization: Bearer <VIGIL_API_TOKEN>'",
                {"WWW-Authenticate": 'Bearer realm="vigil"'},
            )
        sent = supplied.strip().encode("utf-8", errors="surrogatepass")
        if not hmac.compare_digest(sent, expected):
            raise ApiError(
                401,
                "unauthorized",
                "invalid bearer token",
                {"WWW-Authenticate": 'Bearer realm="vigil", error="invalid_token"'},
            )
        return await handler(request)

    return middleware
