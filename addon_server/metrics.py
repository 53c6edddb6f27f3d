"""Prometheus collectors, named as in the seed services where a name exists.

Each app gets its own :class:`CollectorRegistry` so several servers (tests, benchmarks) can live
in one process without colliding on global metric names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Metrics:
    """Every collector the add-on exports, registered on one registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "yolo26_inference_requests_total",
            "Detection requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "yolo26_inference_latency_seconds",
            "End-to-end detection request latency (queue + forward pass)",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.detections_per_image = Histogram(
            "yolo26_detections_per_image",
            "Detections returned per image",
            buckets=(0, 1, 2, 3, 5, 8, 13, 21, 50),
            registry=r,
        )
        self.model_loaded = Gauge(
            "yolo26_model_loaded", "1 when the detector is loaded", registry=r
        )
        self.batch_size = Histogram(
            "vigil_detector_batch_size",
            "Images per forward pass of the dynamic batcher",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "vigil_detector_batch_seconds",
            "Forward-pass time per batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "vigil_detector_queue_depth", "Requests waiting for the detector", registry=r
        )
        self.queue_rejections = Counter(
            "vigil_detector_queue_rejections_total",
            "Requests refused with 429 because the queue was full",
            registry=r,
        )
        self.device_budget = Gauge(
            "vigil_device_budget_bytes", "Memory budget per device", ["device"], registry=r
        )
        self.device_used = Gauge(
            "vigil_device_used_bytes", "Memory Vigil holds per device", ["device"], registry=r
        )
        self.events = Counter(
            "vigil_events_total",
            "Stored risk events by level and LLM status",
            ["level", "llm_status"],
            registry=r,
        )
        # Mirrors of what the Triton backend's probe last read (gauges: Triton owns the counts,
        # and they restart from zero when the server does).
        self.triton_up = Gauge(
            "vigil_triton_up",
            "1 when the Triton server is live and ready and the detector model is ready",
            ["model"],
            registry=r,
        )
        self.triton_inferences = Gauge(
            "vigil_triton_inference_count",
            "Inferences the Triton server ran for the model (images, batches counted by size)",
            ["model"],
            registry=r,
        )
        self.triton_executions = Gauge(
            "vigil_triton_execution_count",
            "Model executions (batches) on the Triton server",
            ["model"],
            registry=r,
        )
        self.triton_queue_seconds = Gauge(
            "vigil_triton_queue_seconds",
            "Time requests waited in Triton's queue, summed, as Triton reports it",
            ["model"],
            registry=r,
        )
        self.triton_compute_seconds = Gauge(
            "vigil_triton_compute_seconds",
            "Input copy, execution and output copy time on Triton, summed",
            ["model"],
            registry=r,
        )
        self.triton_retries = Gauge(
            "vigil_triton_retries",
            "Calls to Triton this add-on retried since it started",
            ["model"],
            registry=r,
        )
        self.triton_failures = Gauge(
            "vigil_triton_failures",
            "Calls to Triton that failed after every retry since the add-on started",
            ["model"],
            registry=r,
        )
        self.http_errors = Counter(
            "vigil_http_errors_total", "Error responses by code", ["code"], registry=r
        )
