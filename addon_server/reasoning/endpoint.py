"""An LLM server's address: its normal form, its credentials, and their redaction.

Users paste ``LLM_URL`` in every form (``…/v1`` or not, with ``user:password@`` for a server
behind a reverse proxy with basic auth). The credentials are split off here, once, where the
URL enters the reasoning stage: everything downstream (the client's request URLs, /health, the
events' ``llm_error``, log lines) only ever sees the bare URL, so a password has no way to reach
them. :func:`redact` is the one helper for text that may still carry a URL from elsewhere (a
configuration error echoing the value the user gave).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

__all__ = ["Endpoint", "normalise_base_url", "redact"]

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:]*)(:[^/@\s]*)?@")
_HIDDEN = "***"


def redact(text: str) -> str:
    """Hide the password of every ``scheme://user:password@host`` in ``text``.

    The user name stays (it helps to tell which account is misconfigured); a URL without
    credentials and any other text pass unchanged.
    """
    return _USERINFO.sub(
        lambda m: (
            f"{m['scheme']}{m['user']}:{_HIDDEN}@" if m.group(3) else f"{m['scheme']}{m['user']}@"
        ),
        text,
    )


def normalise_base_url(url: str) -> str:
    """``http://h:8080``, ``http://h:8080/`` and ``http://h:8080/v1`` all mean one server.

    Users paste either form (Ollama documents ``…/v1``, llama-server the bare host), so the
    client keeps the bare root and appends ``/v1/…`` itself. Credentials are dropped (see
    :class:`Endpoint` for keeping them).
    """
    text = url.strip()
    # The messages leave the URL out: it may carry a password (callers show redact(url)).
    if not text.startswith(("http://", "https://")):
        raise ValueError("an LLM URL must start with http:// or https://")
    try:
        parsed = URL(text)
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if not parsed.host:
        raise ValueError("an LLM URL needs a host")
    bare = str(parsed.with_user(None).with_query(None).with_fragment(None)).rstrip("/")
    if bare.endswith("/v1"):
        bare = bare[: -len("/v1")]
    return bare


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A server root without credentials, and the ``Authorization`` value its URL's
    ``user:password`` stands for (``Basic …``), if it had any."""

    url: str
    basic_auth: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Split ``http://user:pass@host:port/v1`` into the bare root and its credentials."""
        parsed = URL(url.strip())
        auth = None
        if parsed.user is not None or parsed.password is not None:
            auth = aiohttp.encode_basic_auth(parsed.user or "", parsed.password or "")
        return cls(normalise_base_url(url), auth)
