"""A detector served by NVIDIA Triton Inference Server, reached with ``tritonclient``.

The add-on keeps its own front door (decoding, the dynamic batcher, per-request selection) and
sends each batch of decoded pixels to a Triton model; Triton runs the network, batching the
requests of every client with its own dynamic batcher. The model speaks Vigil's detector
protocol, defined here once and served by :mod:`addon_server.detector.triton_serve`:

* input ``images``: ``UINT8 [-1, -1, 3]`` BGR pixels (Triton batches requests of one shape
  together, which is what one camera sends);
* output ``detections``: ``FP32 [-1, 6]`` rows of ``x1, y1, x2, y2, confidence, class_id`` in the
  image's pixels, padded with rows whose ``class_id`` is negative (images of one batch find
  different numbers of objects);
* the model configuration's parameter ``class_names``: a JSON list, the names of the class ids.

A failed call is retried with exponential backoff; when every try fails the batch fails with
:class:`TritonUnavailableError` naming the server and the cause (the API answers 503). A
background probe reads server and model health, metadata and Triton's per-model statistics for
/health and /metrics without blocking a request; it also notices when Triton comes back, and a
fresh connection is made after every failure, so recovery needs no restart.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from addon_server import tracing
from addon_server.config import TritonSettings
from addon_server.detector.base import Detection, canonical_class, clip_box
from addon_server.errors import TritonUnavailableError
from addon_server.imaging import BGRImage

_LOGGER = logging.getLogger(__name__)

INPUT_NAME = "images"
INPUT_DTYPE = "UINT8"
OUTPUT_NAME = "detections"
OUTPUT_COLUMNS = 6
CLASS_NAMES_PARAMETER = "class_names"


@dataclass(frozen=True, slots=True)
class TritonModelStats:
    """Triton's cumulative statistics for one model (since it was loaded on the server)."""

    inference_count: int = 0
    execution_count: int = 0
    success_count: int = 0
    failure_count: int = 0
    queue_seconds: float = 0.0
    compute_seconds: float = 0.0
    """Input copy, execution and output copy together."""

    def as_json(self) -> dict[str, Any]:
        return {
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "success_count": self.success_count,
            "failure_count": self.failure_count,
            "queue_seconds": round(self.queue_seconds, 6),
            "compute_seconds": round(self.compute_seconds, 6),
        }


@dataclass(frozen=True, slots=True)
class TritonState:
    """What the last probe or call learned; /health and /metrics read it without a call."""

    live: bool = False
    ready: bool = False
    model_ready: bool = False
    error: str | None = None
    versions: tuple[str, ...] = ()
    platform: str = ""
    max_batch_size: int = 0
    stats: TritonModelStats = field(default_factory=TritonModelStats)
    retries: int = 0
    failures: int = 0

    @property
    def available(self) -> bool:
        return self.live and self.ready and self.model_ready and self.error is None


def _stats(document: Mapping[str, Any], model: str) -> TritonModelStats:
    """Pick ``model``'s entry out of Triton's statistics JSON (numbers arrive as strings)."""
    for entry in document.get("model_stats", []):
        if entry.get("name") != model:
            continue
        inference: Mapping[str, Any] = entry.get("inference_stats", {})

        def ns(key: str, inference: Mapping[str, Any] = inference) -> int:
            return int(inference.get(key, {}).get("ns", 0))

        return TritonModelStats(
            inference_count=int(entry.get("inference_count", 0)),
            execution_count=int(entry.get("execution_count", 0)),
            success_count=int(inference.get("success", {}).get("count", 0)),
            failure_count=int(inference.get("fail", {}).get("count", 0)),
            queue_seconds=ns("queue") / 1e9,
            compute_seconds=(ns("compute_input") + ns("compute_infer") + ns("compute_output"))
            / 1e9,
        )
    return TritonModelStats()


class _Connection:
    """One ``tritonclient`` client of either protocol, behind the calls this backend makes.

    The HTTP client (gevent) must stay on the thread that made it, so each thread owns its
    own :class:`_Connection` (see :meth:`TritonDetector._connection`).
    """

    def __init__(self, settings: TritonSettings) -> None:
        self.settings = settings
        self.grpc = settings.protocol == "grpc"
        if self.grpc:
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        self.module: Any = module
        timeout = settings.timeout_s
        if self.grpc:
            self.client: Any = module.InferenceServerClient(settings.url)
        else:
            self.client = module.InferenceServerClient(
                settings.http_url, connection_timeout=timeout, network_timeout=timeout
            )

    def _kw(self) -> dict[str, Any]:
        return {"client_timeout": self.settings.timeout_s} if self.grpc else {}

    def health(self) -> tuple[bool, bool, bool]:
        c, model, kw = self.client, self.settings.model, self._kw()
        live = bool(c.is_server_live(**kw))
        ready = bool(c.is_server_ready(**kw))
        return live, ready, bool(c.is_model_ready(model, **kw))

    def config(self) -> dict[str, Any]:
        kw = {"as_json": True, **self._kw()} if self.grpc else {}
        found = self.client.get_model_config(self.settings.model, **kw)
        return dict(found["config"] if self.grpc else found)

    def metadata(self) -> dict[str, Any]:
        if self.grpc:
            return dict(
                self.client.get_model_metadata(self.settings.model, as_json=True, **self._kw())
            )
        return dict(self.client.get_model_metadata(self.settings.model))

    def statistics(self) -> dict[str, Any]:
        if self.grpc:
            return dict(
                self.client.get_inference_statistics(
                    self.settings.model, as_json=True, **self._kw()
                )
            )
        return dict(self.client.get_inference_statistics(self.settings.model))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        tensor = self.module.InferInput(INPUT_NAME, list(batch.shape), INPUT_DTYPE)
        tensor.set_data_from_numpy(batch)
        headers = tracing.inject() or None  # traceparent: Triton's own trace joins ours
        if self.grpc:
            result = self.client.infer(
                self.settings.model,
                [tensor],
                client_timeout=self.settings.timeout_s,
                headers=headers,
            )
        else:
            result = self.client.infer(self.settings.model, [tensor], headers=headers)
        out = result.as_numpy(OUTPUT_NAME)
        if out is None:
            raise TritonUnavailableError(
                f"Triton model {self.settings.model!r} returned no {OUTPUT_NAME!r} output"
            )
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a broken connection must not hide the real failure
            _LOGGER.debug("closing the Triton client failed", exc_info=True)


class TritonDetector:
    """A Vigil-protocol detector model on a Triton server."""

    backend = "triton"

    def __init__(
        self, settings: TritonSettings, *, device: str, min_confidence: float = 0.1
    ) -> None:
        self.settings = settings
        self.name = settings.model
        self.device = device
        self.min_confidence = (
            settings.confidence_threshold
            if settings.confidence_threshold is not None
            else min_confidence
        )
        self._local = threading.local()
        self._connections: list[_Connection] = []
        self._lock = threading.Lock()
        self._state = TritonState()
        self._stop = threading.Event()
        config = self._retrying("read the model configuration", lambda c: c.config())
        self.class_names = self._class_names(config)
        self._state = replace(self._state, max_batch_size=int(config.get("max_batch_size", 0) or 0))
        self._probe_once()
        self._prober = threading.Thread(
            target=self._probe_loop, name=f"triton-probe-{self.name}", daemon=True
        )
        self._prober.start()

    @property
    def where(self) -> str:
        """The server as the messages name it: ``localhost:8001 (grpc)``."""
        return f"{self.settings.endpoint} ({self.settings.protocol})"

    def _class_names(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        raw = config.get("parameters", {}).get(CLASS_NAMES_PARAMETER, {}).get("string_value")
        if not raw:
            raise TritonUnavailableError(
                f"Triton model {self.name!r} at {self.where} has no {CLASS_NAMES_PARAMETER!r} "
                "parameter: it does not speak Vigil's detector protocol"
            )
        names = json.loads(raw)
        return tuple(canonical_class(str(n)) for n in names)

    # -- connections and retries -------------------------------------------------------------

    def _connection(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _Connection(self.settings)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop_connection(self) -> None:
        """Forget this thread's client: a fresh one reconnects at once (a gRPC channel that
        saw the server go would otherwise wait out its own reconnect backoff)."""
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        conn.close()

    def _failure_message(self, what: str, err: BaseException) -> str:
        cause = str(err).strip() or type(err).__name__
        return f"Triton server at {self.where} is unavailable (could not {what}): {cause}"

    def _retrying(self, what: str, call: Any) -> Any:
        """Run ``call(connection)``, retrying with exponential backoff; raise the last cause."""
        tries = self.settings.max_retries + 1
        for attempt in range(tries):
            try:
                return call(self._connection())
            except TritonUnavailableError:
                raise
            except Exception as err:  # tritonclient raises its own and socket errors alike
                self._drop_connection()
                if attempt + 1 < tries and not self._stop.is_set():
                    with self._lock:
                        self._state = replace(self._state, retries=self._state.retries + 1)
                    self._stop.wait(self.settings.backoff_s * 2**attempt)
                    continue
                message = self._failure_message(what, err)
                with self._lock:
                    self._state = replace(
                        self._state,
                        error=message,
                        model_ready=False,
                        failures=self._state.failures + 1,
                    )
                raise TritonUnavailableError(message) from err
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the Detector protocol ---------------------------------------------------------------

    def detect_batch(self, images: Sequence[BGRImage]) -> list[list[Detection]]:
        results: list[list[Detection]] = [[] for _ in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(tuple(image.shape), []).append(index)
        for indices in groups.values():  # one request per shape: Triton batches same shapes
            batch = np.ascontiguousarray(np.stack([images[i] for i in indices]), dtype=np.uint8)
            out = self._retrying("run an inference", lambda c, b=batch: c.infer(b))
            if out.ndim != 3 or out.shape[0] != len(indices) or out.shape[2] != OUTPUT_COLUMNS:
                raise TritonUnavailableError(
                    f"Triton model {self.name!r} answered {OUTPUT_NAME} of shape "
                    f"{list(out.shape)}; Vigil's protocol expects "
                    f"[{len(indices)}, N, {OUTPUT_COLUMNS}]"
                )
            for row, index in enumerate(indices):
                height, width = images[index].shape[:2]
                results[index] = self._decode(out[row], width, height)
        self._mark_answered()
        return results

    def _decode(self, rows: np.ndarray, width: int, height: int) -> list[Detection]:
        detections = []
        for x1, y1, x2, y2, confidence, class_id in rows.tolist():
            if class_id < 0 or confidence < self.min_confidence:
                continue
            if class_id >= len(self.class_names):
                raise TritonUnavailableError(
                    f"Triton model {self.name!r} answered class id {int(class_id)}; it "
                    f"publishes {len(self.class_names)} class names"
                )
            x, y, w, h = clip_box(x1, y1, x2, y2, width, height)
            if w and h:
                detections.append(
                    Detection(self.class_names[int(class_id)], float(confidence), x, y, w, h)
                )
        return detections

    def _mark_answered(self) -> None:
        with self._lock:
            if self._state.error is not None or not self._state.model_ready:
                self._state = replace(
                    self._state, live=True, ready=True, model_ready=True, error=None
                )

    def memory_bytes(self) -> int:
        """The weights live in the Triton server's memory, not in this process's devices."""
        return 0

    def close(self) -> None:
        self._stop.set()
        self._prober.join(timeout=self.settings.timeout_s + 1)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    # -- health, metadata and statistics -----------------------------------------------------

    @property
    def state(self) -> TritonState:
        with self._lock:
            return self._state

    def _probe_once(self) -> None:
        """Read health, metadata and statistics once (on the prober's own connection)."""
        try:
            conn = self._connection()
            live, ready, model_ready = conn.health()
            metadata = conn.metadata() if model_ready else {}
            stats = _stats(conn.statistics(), self.name) if model_ready else None
        except Exception as err:
            self._drop_connection()
            message = self._failure_message("answer a health probe", err)
            with self._lock:
                self._state = replace(
                    self._state, live=False, ready=False, model_ready=False, error=message
                )
            return
        error = None
        if not (live and ready and model_ready):
            error = (
                f"Triton server at {self.where} is up but model {self.name!r} is not ready "
                f"(server live={live}, ready={ready})"
            )
        with self._lock:
            self._state = replace(
                self._state,
                live=live,
                ready=ready,
                model_ready=model_ready,
                error=error,
                versions=tuple(str(v) for v in metadata.get("versions", self._state.versions)),
                platform=str(metadata.get("platform", self._state.platform)),
                stats=stats if stats is not None else self._state.stats,
            )

    def _probe_loop(self) -> None:
        while not self._stop.wait(self.settings.probe_interval_s):
            self._probe_once()

    def health(self) -> dict[str, Any]:
        """The ``triton`` object of the detector's entry in /health and /v1/models."""
        state = self.state
        return {
            "url": self.settings.endpoint,
            "protocol": self.settings.protocol,
            "model": self.name,
            "live": state.live,
            "ready": state.ready,
            "model_ready": state.model_ready,
            "versions": list(state.versions),
            "platform": state.platform,
            "max_batch_size": state.max_batch_size,
            "statistics": state.stats.as_json(),
            "retries": state.retries,
            "failures": state.failures,
            "error": state.error,
        }
