"""Async OpenAI chat-completions client with a JSON-schema-constrained answer.

Vigil speaks to the LLM over HTTP only, whether the server is the add-on's own supervised
llama-cpp-python process or an external llama-server / Ollama / vLLM / NIM. Every failure
(connection refused because the server is restarting, timeout, HTTP error, an answer that is not
the JSON we asked for) surfaces as one exception type, :class:`LLMError`, which the reasoner
turns into ``llm_status: "fallback"``: the rules' score is always there to fall back on, so
nothing in this module retries.

The answer is constrained by :data:`ANSWER_SCHEMA`, but the two server families spell that
differently (see :class:`ResponseFormat`), and a grammar cannot enforce everything (llama.cpp's
converter ignores ``minimum``/``maximum``), so :func:`parse_answer` validates and clamps anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp
from yarl import URL

from .endpoint import Endpoint, normalise_base_url
from .locality import LocalOnlyResolver, NotLocalError, Resolve, check_literal
from .risk import RiskLevel
from .rules import Factor
from .settings import DEFAULTS, ResponseFormat

log = logging.getLogger(__name__)

__all__ = [
    "ANSWER_SCHEMA",
    "LLMAnswer",
    "LLMClient",
    "LLMClientConfig",
    "LLMError",
    "LLMErrorKind",
    "ResponseFormat",
    "normalise_base_url",
    "parse_answer",
    "response_format_payload",
]

SUMMARY_MAX = 120
REASONING_MAX = 240
FACTOR_NAME_MAX = 32
FACTOR_DETAIL_MAX = 60
FACTORS_MAX = 3

#: The shape every answer must have. String and list lengths are bounded so that a grammar-
#: constrained answer always fits in ``max_tokens``: an answer cut off by the token limit is
#: invalid JSON, so these bounds are what makes "every answer parses" hold on a tiny model.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "risk_score": {"type": "integer", "minimum": 0, "maximum": 100},
        "risk_level": {"type": "string", "enum": [lvl.value for lvl in RiskLevel]},
        "summary": {"type": "string", "maxLength": SUMMARY_MAX},
        "reasoning": {"type": "string", "maxLength": REASONING_MAX},
        "factors": {
            "type": "array",
            "maxItems": FACTORS_MAX,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": FACTOR_NAME_MAX},
                    "points": {"type": "integer", "minimum": -100, "maximum": 100},
                    "detail": {"type": "string", "maxLength": FACTOR_DETAIL_MAX},
                },
                "required": ["name", "points", "detail"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["risk_score", "risk_level", "summary", "reasoning", "factors"],
    "additionalProperties": False,
}


def response_format_payload(fmt: ResponseFormat) -> dict[str, Any] | None:
    """The request's ``response_format`` value for a given form."""
    if fmt is ResponseFormat.JSON_OBJECT:
        return {"type": "json_object", "schema": ANSWER_SCHEMA}
    if fmt is ResponseFormat.JSON_SCHEMA:
        return {
            "type": "json_schema",
            "json_schema": {"name": "vigil_risk", "strict": True, "schema": ANSWER_SCHEMA},
        }
    return None


class LLMErrorKind(StrEnum):
    """Why the LLM gave no usable answer (shown in logs, metrics and /health)."""

    UNAVAILABLE = "unavailable"  # the supervised server is not ready (starting, restarting)
    BUSY = "busy"  # all PARALLEL slots taken for longer than the queue timeout
    CONNECTION = "connection"  # refused, reset, or the server died mid-request
    TIMEOUT = "timeout"
    HTTP = "http"  # a non-2xx answer
    PARSE = "parse"  # 2xx, but not a valid answer


class LLMError(Exception):
    """Any failure to get a valid answer; the reasoner falls back to the rules on it."""

    def __init__(self, kind: LLMErrorKind, message: str, status: int | None = None) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message
        self.status = status
        """The HTTP status of an ``HTTP`` error."""

    @property
    def unreachable(self) -> bool:
        """The server (or the gateway in front of it) gave no answer at all: refused, timed
        out, or a gateway's 502/503/504 — as opposed to an answer we could not use."""
        if self.kind is LLMErrorKind.HTTP:
            return self.status in (502, 503, 504)
        return self.kind in (LLMErrorKind.CONNECTION, LLMErrorKind.TIMEOUT)


@dataclass(frozen=True, slots=True)
class LLMAnswer:
    """A validated answer. ``risk_level`` is the model's raw claim, kept for diagnostics only;
    the event's level is always derived from the blended score."""

    risk_score: int
    risk_level: str | None
    summary: str
    reasoning: str
    factors: tuple[Factor, ...] = ()
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    raw: str | None = None  # the model's text as received, for diagnostics and tests
    finish_reason: str | None = None  # "stop", or "length" when max_tokens cut it off
    shortened: tuple[str, ...] = ()
    """Text fields that were longer than the schema allows and were cut to fit: a summary
    cut mid-word must not reach a notification (see :mod:`grounding`)."""


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def _as_int(value: Any, lo: int, hi: int) -> int | None:
    """Lenient integer: 42, 42.6, "42" all work; bools, NaN and junk don't."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float):
        if not math.isfinite(value):
            return None
        return max(lo, min(hi, round(value)))
    return None


def _clean(value: Any) -> str:
    """Printable, single-spaced text: the event store and HA get clean strings (a model can
    emit control characters and lone surrogates that UTF-8 can't encode)."""
    if not isinstance(value, str):
        return ""
    printable = "".join(ch if ch.isprintable() else " " for ch in value)
    return " ".join(printable.split())


def _text(value: Any, limit: int) -> str:
    """:func:`_clean`, bounded to ``limit`` characters."""
    return _clean(value)[:limit]


def parse_answer(content: str | bytes | None) -> LLMAnswer:
    """Validate and clamp a model's JSON answer, or raise ``LLMError(PARSE)``.

    Only ``risk_score`` is mandatory (it is what the blend uses); it is clamped to 0-100. An
    unknown ``risk_level`` becomes None, text fields are squeezed to their schema lengths (and
    named in ``shortened`` when that cut them), and malformed factor items are dropped rather
    than failing the whole answer. A code fence around the JSON (servers without schema
    support like to add one) is tolerated.
    """
    if content is None:
        raise LLMError(LLMErrorKind.PARSE, "empty answer")
    if isinstance(content, bytes):
        content = content.decode("utf-8", errors="replace")
    m = _FENCE.match(content)
    if m:
        content = m.group(1)
    try:
        # strict=False: raw control characters inside strings are tolerated, because
        # llama-cpp-python's schema grammar admits them (its string rule is [^"\\]) and a
        # small model does emit them; _text() cleans them afterwards.
        data = json.loads(content, strict=False)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise LLMError(LLMErrorKind.PARSE, f"answer is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise LLMError(LLMErrorKind.PARSE, f"answer is a {type(data).__name__}, not an object")
    score = _as_int(data.get("risk_score"), 0, 100)
    if score is None:
        raise LLMError(
            LLMErrorKind.PARSE, f"risk_score missing or not a number: {data.get('risk_score')!r}"
        )
    level_raw = data.get("risk_level")
    level = level_raw.strip().lower() if isinstance(level_raw, str) else None
    if level not in {lvl.value for lvl in RiskLevel}:
        level = None
    factors: list[Factor] = []
    raw_factors = data.get("factors")
    if isinstance(raw_factors, list):
        for item in raw_factors[:FACTORS_MAX]:
            if not isinstance(item, dict):
                continue
            name = _text(item.get("name"), FACTOR_NAME_MAX)
            points = _as_int(item.get("points"), -100, 100)
            if not name or points is None:
                continue
            factors.append(Factor(name, points, _text(item.get("detail"), FACTOR_DETAIL_MAX)))
    texts = {"summary": _clean(data.get("summary")), "reasoning": _clean(data.get("reasoning"))}
    limits = {"summary": SUMMARY_MAX, "reasoning": REASONING_MAX}
    return LLMAnswer(
        risk_score=score,
        risk_level=level,
        summary=texts["summary"][:SUMMARY_MAX],
        reasoning=texts["reasoning"][:REASONING_MAX],
        factors=tuple(factors),
        shortened=tuple(name for name, text in texts.items() if len(text) > limits[name]),
    )


@dataclass(frozen=True, slots=True)
class LLMClientConfig:
    """Request settings; ``model`` empty means "whatever the server serves" (resolved via
    ``/v1/models`` on first use, which Ollama and vLLM need and llama.cpp ignores).

    ``repeat_penalty`` is a llama.cpp extension (not OpenAI's API), sent only when set: tiny
    models loop ("a camera that is equipped with a camera that is …") without it.
    Defaults are the add-on's (:data:`~addon_server.reasoning.settings.DEFAULTS`).
    """

    api_key: str | None = field(default=None, repr=False)
    model: str = DEFAULTS.model
    response_format: ResponseFormat = ResponseFormat.JSON_OBJECT
    timeout_s: float = DEFAULTS.timeout_s
    connect_timeout_s: float = DEFAULTS.connect_timeout_s
    max_tokens: int = DEFAULTS.max_tokens
    temperature: float = DEFAULTS.temperature
    seed: int | None = DEFAULTS.seed
    repeat_penalty: float | None = None
    parallel: int = DEFAULTS.parallel
    queue_timeout_s: float = DEFAULTS.queue_timeout_s
    local_only: bool = DEFAULTS.local_only
    """Connect only to loopback / private-LAN addresses (:mod:`.locality`), checked after
    name resolution on every connection."""
    resolve: Resolve | None = field(default=None, repr=False, compare=False)
    """The name lookup local-only mode checks; None: the system resolver."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0 or self.queue_timeout_s < 0:
            raise ValueError("timeouts must be positive")
        if self.parallel < 1:
            raise ValueError("parallel must be >= 1")
        if self.max_tokens < 16:
            raise ValueError("max_tokens must be >= 16")


class LLMClient:
    """One aiohttp session to one OpenAI-compatible server.

    ``base_url`` is a callable so the supervised server may come back on another port after a
    restart without anyone rebuilding the client. ``parallel`` bounds requests in flight (the
    seeds' PARALLEL): llama-cpp-python serves one request at a time anyway, and an event should
    fall back after ``queue_timeout_s`` rather than queue behind a backlog.

    A URL string may carry ``user:password@`` (a server behind a proxy with basic auth). Only
    one ``Authorization`` header can go out, so the API key wins (``Bearer``) and the URL's
    credentials are dropped with a warning; without a key they are sent as basic auth. The
    request URLs never contain them, so neither do error messages.
    """

    def __init__(self, base_url: str | Callable[[], str], config: LLMClientConfig) -> None:
        self._base_url: Callable[[], str]
        self._basic_auth: str | None = None
        if isinstance(base_url, str):
            endpoint = Endpoint.parse(base_url)
            self._base_url = lambda: endpoint.url
            if endpoint.basic_auth is not None and config.api_key:
                log.warning(
                    "the LLM URL %s carries a user and password and an API key is set: "
                    "sending the API key, ignoring the URL's credentials",
                    endpoint.url,
                )
            elif endpoint.basic_auth is not None:
                self._basic_auth = endpoint.basic_auth
        else:
            self._base_url = base_url
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(config.parallel)
        self._model: str | None = config.model or None

    @property
    def base_url(self) -> str:
        """The server root now (no ``/v1``)."""
        return self._base_url()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        elif self._basic_auth is not None:
            headers["Authorization"] = self._basic_auth
        return headers

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Fresh connections per request: after a server restart a pooled keep-alive socket
            # would fail the first request for no reason.
            # Local-only: every connection resolves afresh (no DNS cache), so a name that
            # starts resolving to a public address is refused from that moment on.
            local = self.config.local_only
            resolver = LocalOnlyResolver(self.config.resolve) if local else None
            connector = aiohttp.TCPConnector(
                force_close=True, resolver=resolver, use_dns_cache=not local
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers(),
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def list_models(self, timeout_s: float | None = None) -> list[str]:
        """``GET /v1/models``: the reachability check for /health and startup."""
        timeout = aiohttp.ClientTimeout(
            total=timeout_s or self.config.connect_timeout_s * 2,
            sock_connect=self.config.connect_timeout_s,
        )
        data = await self._request("GET", "/v1/models", None, timeout)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise LLMError(LLMErrorKind.PARSE, "/v1/models answer has no data list")
        return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]

    async def _resolve_model(self) -> str | None:
        if self._model is None:
            try:
                models = await self.list_models()
            except LLMError:
                return None
            self._model = models[0] if models else None
        return self._model

    async def complete(self, messages: Sequence[Mapping[str, str]]) -> LLMAnswer:
        """Ask for a risk assessment; returns a validated answer or raises :class:`LLMError`."""
        body = await self._answer_body(messages)
        started = time.perf_counter()
        data = await self.chat_raw(body)
        latency = time.perf_counter() - started
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(LLMErrorKind.PARSE, "answer has no choices[0].message.content") from exc
        answer = parse_answer(content if isinstance(content, str) else None)
        finish = data["choices"][0].get("finish_reason")
        usage_raw = data.get("usage")
        usage: dict[str, Any] = usage_raw if isinstance(usage_raw, dict) else {}
        return LLMAnswer(
            risk_score=answer.risk_score,
            risk_level=answer.risk_level,
            summary=answer.summary,
            reasoning=answer.reasoning,
            factors=answer.factors,
            model=str(data.get("model") or body.get("model") or ""),
            prompt_tokens=_as_int(usage.get("prompt_tokens"), 0, 10**9),
            completion_tokens=_as_int(usage.get("completion_tokens"), 0, 10**9),
            latency_s=latency,
            raw=content,
            finish_reason=finish if isinstance(finish, str) else None,
            shortened=answer.shortened,
        )

    async def chat_raw(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST one chat-completions body as is (auth, timeouts and slots applied) and return
        the decoded JSON; :meth:`complete` builds on it, benchmarks use it directly."""
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.config.queue_timeout_s)
        except TimeoutError as exc:
            raise LLMError(
                LLMErrorKind.BUSY,
                f"all {self.config.parallel} LLM slot(s) busy for {self.config.queue_timeout_s}s",
            ) from exc
        try:
            timeout = aiohttp.ClientTimeout(
                total=self.config.timeout_s, sock_connect=self.config.connect_timeout_s
            )
            return await self._request("POST", "/v1/chat/completions", dict(body), timeout)
        finally:
            self._slots.release()

    async def _answer_body(self, messages: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        cfg = self.config
        body: dict[str, Any] = {
            "messages": [dict(m) for m in messages],
            "max_tokens": cfg.max_tokens,
            "temperature": cfg.temperature,
            "stream": False,
        }
        model = await self._resolve_model()
        if model:
            body["model"] = model
        if cfg.seed is not None:
            body["seed"] = cfg.seed
        if cfg.repeat_penalty is not None:
            body["repeat_penalty"] = cfg.repeat_penalty  # llama.cpp's, not OpenAI's
        fmt = response_format_payload(cfg.response_format)
        if fmt is not None:
            body["response_format"] = fmt
        return body

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        client_timeout: aiohttp.ClientTimeout,
    ) -> dict[str, Any]:
        url = self.base_url + path
        session = self._get_session()
        try:
            if self.config.local_only:  # names are checked by the resolver, literals here
                check_literal(URL(url).host or "")
            async with session.request(method, url, json=body, timeout=client_timeout) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise LLMError(
                        LLMErrorKind.HTTP,
                        f"{method} {path} → HTTP {resp.status}: {text[:200]}",
                        resp.status,
                    )
        except TimeoutError as exc:
            raise LLMError(
                LLMErrorKind.TIMEOUT, f"{method} {path} took longer than {client_timeout.total}s"
            ) from exc
        except NotLocalError as exc:
            raise LLMError(LLMErrorKind.CONNECTION, f"{method} {url}: {exc.strerror}") from exc
        except aiohttp.ClientError as exc:
            # str(), not repr(): this text reaches /health and Home Assistant's repair.
            reason = str(exc) or type(exc).__name__
            raise LLMError(LLMErrorKind.CONNECTION, f"{method} {url}: {reason}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LLMError(LLMErrorKind.PARSE, f"{path} answered non-JSON: {text[:200]}") from exc
        if not isinstance(data, dict):
            raise LLMError(LLMErrorKind.PARSE, f"{path} answered a non-object")
        return data
