"""Prometheus collectors, named as in the seed services where a name exists.

Each app gets its own :class:`CollectorRegistry` so several servers (tests, benchmarks) can live
in one process without colliding on global metric names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
            "Stored risk events (their first revision) by level and LLM status (pending, skipped)",
            ["level", "llm_status"],
            registry=r,
        )
        self.refinements = Counter(
            "vigil_llm_refinements_total",
            "Events the LLM was asked to refine, by outcome (done, or failed: the rules stand)",
            ["status"],
            registry=r,
        )
        self.llm_latency = Histogram(
            "vigil_llm_latency_seconds",
            "Time a refinement spent waiting for the LLM's answer (answered or fallen back)",
            buckets=_LATENCY_BUCKETS,
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
        self._zoo(r)
        self.http_errors = Counter(
            "vigil_http_errors_total", "Error responses by code", ["code"], registry=r
        )

    def _zoo(self, r: CollectorRegistry) -> None:
        """The model zoo's collectors; the ``enrichment_*`` names are the seeds'."""
        self.zoo_usage = Gauge(
            "enrichment_vram_usage_bytes",
            "Bytes the zoo accounts per device (measured after load; estimates while loading)",
            ["device"],
            registry=r,
        )
        self.zoo_budget = Gauge(
            "enrichment_vram_budget_bytes",
            "The zoo's byte budget per device",
            ["device"],
            registry=r,
        )
        self.zoo_utilization = Gauge(
            "enrichment_vram_utilization_percent",
            "Accounted bytes (co-tenants included) as a share of the device budget",
            ["device"],
            registry=r,
        )
        self.zoo_loaded = Gauge(
            "enrichment_models_loaded", "Zoo models loaded per device", ["device"], registry=r
        )
        self.zoo_evictions = Counter(
            "enrichment_model_evictions_total",
            "Models unloaded to make room for another",
            ["model_name", "priority"],
            registry=r,
        )
        self.zoo_unloads = Counter(
            "vigil_zoo_unloads_total",
            "Zoo unloads by cause (pressure, idle, request, oom, over_budget)",
            ["model_name", "reason"],
            registry=r,
        )
        self.zoo_load_seconds = Histogram(
            "enrichment_model_load_time_seconds",
            "Load plus warm-up time per zoo model",
            ["model_name"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.zoo_eviction_age = Histogram(
            "vigil_zoo_eviction_age_seconds",
            "How long an evicted model had been loaded",
            buckets=(1, 5, 15, 60, 300, 900, 3600, 14400),
            registry=r,
        )
        self.zoo_estimate_error = Gauge(
            "vigil_zoo_estimate_error_ratio",
            "(measured - estimated) / estimated bytes at the model's last load",
            ["model_name"],
            registry=r,
        )
        self.zoo_admission_wait = Histogram(
            "vigil_zoo_admission_wait_seconds",
            "Time a request waited for a model to be admitted (0 when it was loaded)",
            buckets=(0.0, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.zoo_rejections = Counter(
            "vigil_zoo_rejections_total",
            "Requests refused with zoo_busy, by reason",
            ["model_name", "reason"],
            registry=r,
        )
        self.zoo_ooms = Counter(
            "vigil_zoo_oom_total", "Out-of-memory errors while loading", ["model_name"], registry=r
        )
        self.zoo_overruns = Counter(
            "vigil_zoo_budget_overruns_total",
            "Times a measurement put the accounted bytes over the budget",
            ["device"],
            registry=r,
        )

    def revision_committed(self, document: Mapping[str, Any]) -> None:
        """Count one stored event revision (the store tells of each, in commit order).

        An event is counted once, at its first revision; the LLM's refinement (revision 2) is
        counted by outcome and, when the LLM was actually waited for, timed. Counting here
        rather than in the analyze route catches refinements that finish after the answer.
        """
        if int(document.get("revision", 1)) <= 1:
            self.events.labels(document["risk_level"], document["llm_status"]).inc()
            return
        self.refinements.labels(document["llm_status"]).inc()
        llm_ms = (document.get("timings_ms") or {}).get("reason_llm")
        if llm_ms is not None:
            self.llm_latency.observe(float(llm_ms) / 1000)
