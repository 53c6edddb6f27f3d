"""OpenTelemetry traces: one trace from Home Assistant's request through every analysis stage.

Off by default, and then free: nothing from ``opentelemetry`` is imported and :func:`stage` is
the stopwatch the pipeline's ``timings_ms`` always had. :func:`configure` (called by the app
factory when ``tracing.otlp_endpoint`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` names a collector)
turns on:

* a server span per HTTP request, continuing the caller's W3C ``traceparent`` when it sends one
  (:func:`middleware`; the first middleware, so it sees the status the error middleware set);
* a child span per analysis stage (:func:`stage`, which also keeps the stage's milliseconds);
* a client span around every outgoing aiohttp request (the LLM server), which carries
  ``traceparent`` on to it: OpenTelemetry's aiohttp client instrumentation;
* :func:`inject` / :func:`extract` for hops that are not HTTP (a Ray Serve replica gets the
  carrier with its arguments and opens its spans inside ``with extract(carrier):``).

Spans leave through a batching OTLP gRPC exporter, so a request never waits for the collector.
The state is per process (OpenTelemetry's propagation and the client instrumentation are), so
this module keeps its own provider instead of setting the global one: a second app in the same
process (tests) replaces it rather than being refused.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from addon_server.config import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SCOPE = "addon_server"


class _State:
    """What :func:`configure` set up; ``tracer`` is None while tracing is off."""

    tracer: Tracer | None = None
    provider: TracerProvider | None = None


_state = _State()


def enabled() -> bool:
    """Whether spans are being recorded (a collector is configured)."""
    return _state.tracer is not None


def configure(settings: TracingSettings) -> None:
    """Export spans to ``settings.otlp_endpoint`` from now on; without one, record nothing."""
    shutdown()
    if settings.otlp_endpoint is None:
        return
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(settings.otlp_endpoint)))
    # Sessions made from now on get the tracing hooks: build the app (and its LLM client) after.
    AioHttpClientInstrumentor().instrument(tracer_provider=provider)
    _state.provider, _state.tracer = provider, provider.get_tracer(_SCOPE)


def shutdown() -> None:
    """Send what is buffered and stop recording (the app's cleanup calls it)."""
    if _state.provider is not None:
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

        AioHttpClientInstrumentor().uninstrument()  # it holds this provider
        _state.provider.shutdown()
    _state.tracer = _state.provider = None


@contextlib.contextmanager
def span(name: str, **attributes: str | int | float) -> Iterator[None]:
    """A child span of the current one around the block, when tracing is on."""
    if _state.tracer is None:
        yield
    else:
        with _state.tracer.start_as_current_span(name, attributes=attributes):
            yield


@contextlib.contextmanager
def stage(name: str, timings: MutableMapping[str, float], key: str | None = None) -> Iterator[None]:
    """Time one stage into ``timings[key or name]`` (ms), in a child span when tracing is on."""
    started = time.perf_counter()
    with span(name):
        yield
    timings[key or name] = (time.perf_counter() - started) * 1000


def inject() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``), for a hop to carry along.

    Empty when tracing is off or no span is current; :func:`extract` accepts that.
    """
    if _state.tracer is None:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def extract(carrier: dict[str, str] | None) -> Iterator[None]:
    """Continue the trace :func:`inject` wrote: spans opened inside are its children."""
    if not carrier:
        yield
        return
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One server span per request, the child of the caller's ``traceparent`` when sent."""
    tracer = _state.tracer
    if tracer is None:
        return await handler(request)
    from opentelemetry import propagate, trace

    route = request.match_info.route.resource
    path = route.canonical if route is not None else request.path
    attributes: dict[str, Any] = {
        "http.request.method": request.method,
        "http.route": path,
        "url.path": request.path,
    }
    with tracer.start_as_current_span(
        f"{request.method} {path}",
        context=propagate.extract(request.headers),  # case-insensitive lookups
        kind=trace.SpanKind.SERVER,
        attributes=attributes,
    ) as span:
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(trace.StatusCode.ERROR)
        return response
