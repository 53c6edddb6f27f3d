"""A real OpenTelemetry collector for tests: ``rotel`` (PyPI) receiving OTLP gRPC on loopback.

rotel's agent binary ships inside the package. Run in the foreground with the ``blackhole``
exporter and ``--debug-log traces --debug-log-verbosity detailed``, it prints every span it
receives to stdout (the OpenTelemetry Collector's debug format); :func:`received` reads them
back from that file. The agent is this test's own child, stopped by its pid.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import rotel

from benchmarks.addon_process import free_port

AGENT = Path(rotel.__file__).parent / "rotel-agent"
READY_TIMEOUT_S = 60.0
"""Catches a hang: the agent listens within milliseconds."""


@dataclass
class Span:
    """One received span, as the collector printed it."""

    trace_id: str = ""
    span_id: str = ""
    parent_id: str = ""
    name: str = ""
    kind: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    resource: dict[str, str] = field(default_factory=dict)
    """The exporting process' resource: ``service.name``, ``service.instance.id`` (one per
    process), ..."""


@dataclass(frozen=True)
class Collector:
    endpoint: str
    """OTLP gRPC, as ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes it."""
    traces_http_url: str
    """OTLP/HTTP traces, for exporters that speak HTTP (Triton's)."""
    output: Path


@contextlib.contextmanager
def running_collector(folder: Path) -> Iterator[Collector]:
    """Start rotel on two free loopback ports; stop it (by its pid) when the block ends."""
    grpc_port, http_port = free_port(), free_port()
    output = folder / "rotel-spans.txt"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [
                str(AGENT),
                "start",
                "--exporter=blackhole",
                "--debug-log=traces",
                "--debug-log-verbosity=detailed",
                f"--otlp-grpc-endpoint=127.0.0.1:{grpc_port}",
                f"--otlp-http-endpoint=127.0.0.1:{http_port}",
                f"--pid-file={folder / 'rotel.pid'}",
                f"--log-file={folder / 'rotel.log'}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert proc.poll() is None, output.read_text(errors="replace")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", grpc_port), timeout=1),
            ):
                break
            assert time.monotonic() < deadline, f"rotel not listening within {READY_TIMEOUT_S} s"
            time.sleep(0.05)
        yield Collector(
            f"http://127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}/v1/traces", output
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=READY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_FIELDS = {"Trace ID": "trace_id", "Parent ID": "parent_id", "ID": "span_id", "Name": "name"}


def received(collector: Collector) -> list[Span]:
    """Every span the collector has printed so far."""
    spans: list[Span] = []
    span: Span | None = None
    resource: dict[str, str] = {}
    in_attributes = in_resource = False
    for raw in collector.output.read_text(errors="replace").splitlines():
        line = raw.strip()
        if line.startswith("Span #"):
            span, in_attributes, in_resource = Span(resource=resource), False, False
            spans.append(span)
        elif line.startswith("ResourceSpans #"):
            span, resource, in_resource = None, {}, True
        elif line.startswith("ScopeSpans #"):
            span, in_resource = None, False
        elif in_resource and line.startswith("-> "):
            key, value = _attribute(line)
            resource[key] = value
        elif span is None:
            continue
        elif line == "Attributes:":
            in_attributes = True
        elif line.startswith(("Events:", "Links:")):
            in_attributes = False
        elif in_attributes and line.startswith("-> "):
            key, value = _attribute(line)
            span.attributes[key] = value
        elif " : " in line:
            key, _, value = line.partition(" : ")
            if key.strip() in _FIELDS:
                setattr(span, _FIELDS[key.strip()], value.strip())
            elif key.strip() == "Kind":
                span.kind = value.strip()
    return spans


def _attribute(line: str) -> tuple[str, str]:
    """``-> key: Str(x)`` → (key, x): values print as Str(x), Int(5); keep what is inside."""
    key, _, value = line[3:].partition(": ")
    return key, value[value.find("(") + 1 : -1] if "(" in value else value


def wait_for_spans(
    collector: Collector, trace_id: str, done: Callable[[list[Span]], bool], timeout_s: float
) -> list[Span]:
    """The trace's spans once ``done`` says they are all there, or what came in ``timeout_s``
    (a hang guard: exporters batch, so spans arrive a moment after the work)."""
    deadline = time.monotonic() + timeout_s
    while True:
        spans = [s for s in received(collector) if s.trace_id == trace_id]
        if done(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)
