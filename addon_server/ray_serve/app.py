"""Vigil's model stages as one Ray Serve application (``serve deploy deploy/ray/vigil.yaml``).

Four deployments, built from the add-on's own classes:

* ``Detector`` — the configured :class:`~addon_server.detector.base.Detector` (the add-on's
  ``detector:`` section, the same loader), behind ``@serve.batch``: concurrent calls from any
  number of ingress requests run as one ``detect_batch``.
* ``Zoo`` — zoo models multiplexed by model id (``@serve.multiplexed``): Serve routes a model's
  requests to a replica that has it loaded; each replica runs a
  :class:`~addon_server.zoo.manager.ZooManager` with the zoo's byte budget, because Ray
  enforces no GPU memory. ``max_num_models_per_replica`` is derived from that budget.
* ``LLM`` — a pass-through to an OpenAI-compatible server (``llm_url``), placed on a host.
* ``VigilIngress`` — HTTP: ``POST /detect`` (the add-on's detector backend), ``POST /enrich``
  (its zoo client), ``POST /analyze`` (one analysis' model stages per call: decode, detect,
  the triggered zoo models), ``POST /llm`` (the LLM's status and answer with the replica's
  placement), ``POST /v1/chat/completions`` and ``GET /v1/models`` (OpenAI's API, passed
  through to the LLM stage: the add-on's ``LLM_MODE=ray`` client), ``GET /healthz`` and
  ``GET /zoo_status?model=`` (the zoo of the replica Serve routes that model to). Each stage
  call has its own timeout; a stage that does not answer in time is named in
  ``missing_stages`` and the answer carries what the other stages found (``degraded: true``).

Every replica call takes ``trace_context`` (W3C ``traceparent``/``tracestate`` from the HTTP
request): :func:`trace_scope` is the one place a tracer attaches it inside the replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse

from addon_server import tracing
from addon_server.config import TracingSettings
from addon_server.config import parse as parse_config
from addon_server.detector import load_detector
from addon_server.detector.base import Detection
from addon_server.imaging import ImageError, decode
from addon_server.ray_serve.client import detection_of, detection_row
from addon_server.ray_serve.placement import (
    AppArgs,
    models_per_replica,
    parse_args,
    zoo_settings,
)
from addon_server.reasoning.supervisor import ServerState, SupervisedServer, SupervisorConfig
from addon_server.zoo.interface import Enrichment, Frame
from addon_server.zoo.manager import Lease, ZooManager
from addon_server.zoo.mlflow_source import RegistrySource
from addon_server.zoo.models.appearance import AppearanceResult
from addon_server.zoo.registry import ModelSpec, Registry, configured

_LOGGER = logging.getLogger(__name__)
TRACE_HEADERS = ("traceparent", "tracestate", "baggage")


@contextlib.contextmanager
def trace_scope(trace_context: Mapping[str, str] | None, name: str) -> Iterator[None]:
    """Run a replica's work in a span ``name`` continuing the caller's trace (W3C headers).

    A replica is a process of its own: the first call turns tracing on there when the standard
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` names a collector (give it to the replicas through the
    application's ``runtime_env.env_vars``); without one this is free (:mod:`addon_server.tracing`).
    """
    _trace_from_env()
    with tracing.extract(dict(trace_context or {})), tracing.span(name, **_replica_attributes()):
        yield


def _replica_attributes() -> dict[str, str]:
    """The node and replica a span ran on, so a trace shows which host each hop took; nothing
    while tracing is off or outside a Serve replica."""
    if not tracing.enabled():
        return {}
    import ray
    from ray.serve.exceptions import RayServeException

    if not ray.is_initialized():
        return {}
    try:
        replica = serve.get_replica_context().replica_tag
    except RayServeException:
        return {}
    return {"ray.node_id": ray.get_runtime_context().get_node_id(), "ray.replica": replica}


_TRACING_CHECKED: list[bool] = []


def _trace_from_env() -> None:
    """Configure this process' tracing from the OTel environment, once."""
    if _TRACING_CHECKED:
        return
    _TRACING_CHECKED.append(True)
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint and not tracing.enabled():
        service = os.environ.get("OTEL_SERVICE_NAME", "vigil-ray")
        tracing.configure(TracingSettings(otlp_endpoint=endpoint, service_name=service))


def where() -> dict[str, Any]:
    """The replica answering: its node, its actor and the GPUs Ray gave it."""
    import ray

    context = ray.get_runtime_context()
    return {
        "node_id": context.get_node_id(),
        "replica": serve.get_replica_context().replica_tag,
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "assigned": context.get_assigned_resources(),  # type: ignore[no-untyped-call]
    }


def _device() -> str:
    """``cuda:0`` when Ray assigned this replica a GPU share (CUDA_VISIBLE_DEVICES is set to
    it), else ``cpu``; a fake GPU (tests) has no CUDA runtime behind it, so CPU it is."""
    import ray

    if not ray.get_gpu_ids():
        return "cpu"
    try:
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


@serve.deployment(name="Detector")
class DetectorDeployment:
    """The add-on's detector in a replica; concurrent calls are batched by Serve."""

    def __init__(self, detector: Mapping[str, Any], max_batch_size: int, wait_s: float) -> None:
        settings = parse_config({"detector": dict(detector)}, environ={}).detector
        self.detector = load_detector(settings, _device())
        batched: Any = self.detect_many  # serve.batch's wrapper: its setters are untyped
        batched.set_max_batch_size(max_batch_size)
        batched.set_batch_wait_timeout_s(wait_s)
        self.where = where()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def detect_many(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(self.detector.detect_batch, images)
        return [
            {
                "detections": [detection_row(d) for d in boxes],
                "batch_size": len(images),
                "model": self.detector.name,
                **self.where,
            }
            for boxes in found
        ]

    async def detect(
        self, pixels: np.ndarray, trace_context: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        with trace_scope(trace_context, "detector"):
            result: dict[str, Any] = await self.detect_many(pixels)
            return result

    def describe(self) -> dict[str, Any]:
        """What the add-on's detector backend needs to know: the model and its classes."""
        return {"classes": list(self.detector.class_names), "model": self.detector.name}


class _Held:
    """A zoo model Serve keeps loaded: it holds a lease, so the zoo never evicts it under Serve.

    Serve's LRU eviction calls ``__del__`` (from a thread; the garbage collector calls it again
    later): the first call hands the lease back on the replica's loop and unloads the model
    from the zoo unless a call still uses it. Serve's routing no longer sends the model here,
    and ``max_num_models_per_replica`` only keeps the replica in its budget if an evicted
    model's bytes are given back.
    """

    def __init__(self, manager: ZooManager, lease: Lease, loop: asyncio.AbstractEventLoop) -> None:
        self.manager = manager
        self.lease = lease
        self._loop = loop
        self._handed_back = False

    def __del__(self) -> None:
        if self._handed_back:
            return
        self._handed_back = True
        with contextlib.suppress(RuntimeError):  # the loop is closed at replica shutdown
            self._loop.call_soon_threadsafe(self._evicted)

    def _evicted(self) -> None:
        self.lease.release()
        task = self._loop.create_task(_unload_if_idle(self.manager, self.lease.name))
        _UNLOADS.add(task)
        task.add_done_callback(_UNLOADS.discard)


_UNLOADS: set[asyncio.Task[None]] = set()
"""Unloads under way (the loop keeps only weak references to tasks)."""


async def _unload_if_idle(manager: ZooManager, name: str) -> None:
    """Unload ``name`` if nothing holds it: the check and the eviction mark happen in one step
    (no await between them), so a lease taken meanwhile (a reload) keeps the model."""
    if manager.entries[name].refcount == 0:
        await manager.unload(name)


def _release_when_loaded(loading: asyncio.Future[Lease]) -> None:
    if not loading.cancelled() and loading.exception() is None:
        loading.result().release()


@serve.deployment(name="Zoo")
class ZooDeployment:
    """Zoo models multiplexed by id, within the zoo's byte budget in each replica."""

    def __init__(
        self,
        zoo: Mapping[str, Any],
        models: Sequence[str] | None,
        budget_bytes: int,
        models_dir: str,
        registry: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings, registry_settings = zoo_settings(zoo, registry or {})
        rows = Registry()
        names = list(models) if models is not None else rows.names()
        # The zoo section's sources: a models:/ URI is resolved on the MLflow registry at each
        # load, so an alias switch is served from this replica's next load of the model.
        self.specs: list[ModelSpec] = configured((rows[n] for n in names), self.settings)
        self.manager = ZooManager(
            _device(),
            self.specs,
            budget_bytes=budget_bytes,
            models_dir=Path(models_dir),
            margin_bytes=self.settings.margin_bytes,
            registry=RegistrySource.of(registry_settings),
        )
        self.max_models = models_per_replica(budget_bytes, self.specs)
        self.where = where()

        async def get_model(model_id: str) -> _Held:
            if model_id not in self.manager.entries:
                raise KeyError(f"no zoo model {model_id!r} here")
            # A caller past its stage timeout cancels this call; the load goes on (shielded)
            # so the next request finds the model loaded, and its lease is handed back.
            loading = asyncio.ensure_future(
                self.manager.acquire(model_id, deadline_s=self.settings.deadline_s)
            )
            try:
                lease = await asyncio.shield(loading)
            except asyncio.CancelledError:
                loading.add_done_callback(_release_when_loaded)
                raise
            return _Held(self.manager, lease, asyncio.get_running_loop())

        self.get_model = serve.multiplexed(max_num_models_per_replica=self.max_models)(get_model)

    async def infer(
        self, frame: Frame, trace_context: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Run the request's model (its multiplexed id) on ``frame``."""
        name = serve.get_multiplexed_model_id()
        with trace_scope(trace_context, f"zoo.{name}"):
            await self.get_model(name)  # Serve's LRU: loaded here, the least recent evicted
            # This call's own lease: a Serve eviction meanwhile cannot unload it under the call.
            async with self.manager.use(name, deadline_s=self.settings.deadline_s) as model:
                result: Enrichment = await asyncio.to_thread(model.infer, frame)
            answer = {
                "model": name,
                "result": result.as_json(),
                "context_lines": result.context_lines(),
                "loaded": self.loaded(),
                "registry": self.sources().get(name),
                **self.where,
            }
            if isinstance(result, AppearanceResult):  # the add-on's body re-ID needs vectors
                answer["appearance"] = result.as_wire()
            return answer

    def loaded(self) -> list[str]:
        return sorted(n for n, e in self.manager.entries.items() if e.model is not None)

    def sources(self) -> dict[str, dict[str, Any]]:
        """The registry version each ``models:/`` model was (last) loaded from, as the
        add-on's /v1/models shows it: which version a replica serves after an alias switch."""
        entries = self.manager.entries.items()
        return {n: e.source.as_json() for n, e in entries if e.source is not None}

    def status(self) -> dict[str, Any]:
        return {
            "max_num_models_per_replica": self.max_models,
            "budget_bytes": self.manager.budget_bytes,
            "zoo_bytes": self.manager.zoo_bytes(),
            "runtime_bytes": self.manager.runtime_bytes(),
            "model_bytes": {
                n: e.accounted for n, e in self.manager.entries.items() if e.holds_bytes
            },
            "loaded": self.loaded(),
            "registry": self.sources(),
            **self.where,
        }


def _llm_device() -> str:
    """The GPU Ray assigned, by its physical id: the supervisor sets CUDA_VISIBLE_DEVICES to it
    for llama.cpp (Ray's own CUDA_VISIBLE_DEVICES in this replica would otherwise be replaced
    by ``0``, another GPU); ``cpu`` without one or without CUDA."""
    import ray

    gpus = ray.get_gpu_ids()
    return f"cuda:{gpus[0]}" if gpus and _device() != "cpu" else "cpu"


@serve.deployment(name="LLM")
class LLMDeployment:
    """The LLM stage on its host: a pass-through to an OpenAI-compatible server (``llm_url``),
    or a llama.cpp server this replica supervises (``llm_model_path``; ``embedded`` is the
    add-on's bundled SmolLM2) on the GPU share Ray assigned, restarted when it dies."""

    def __init__(self, url: str | None, model_path: str | None, timeout_s: float) -> None:
        self.url = url.rstrip("/") if url else None
        self.timeout_s = timeout_s
        self.where = where()
        self.server: SupervisedServer | None = None
        if model_path is not None:
            from addon_server.reasoning.reasoner import embedded_model_path

            path = embedded_model_path() if model_path == "embedded" else Path(model_path)
            self.server = SupervisedServer(SupervisorConfig(model_path=path, device=_llm_device()))
        self._starting = asyncio.Lock()

    async def _base_url(self) -> str | None:
        """The server to talk to; a supervised one is started on first use."""
        if self.server is None:
            return self.url
        async with self._starting:
            if self.server.state is ServerState.STOPPED:
                await self.server.start()
        if not await self.server.wait_ready(self.timeout_s):
            raise StageTimeout(f"the supervised LLM is not ready: {self.server.status().as_json()}")
        return self.server.base_url()

    async def complete(
        self, body: Mapping[str, Any], trace_context: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """One chat completion: the server's status and answer, as it gave them."""
        return await self._forward("POST", "/v1/chat/completions", body, trace_context)

    async def models(self, trace_context: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The server's ``/v1/models`` (an OpenAI client's reachability check)."""
        return await self._forward("GET", "/v1/models", None, trace_context)

    async def _forward(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        trace_context: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        import aiohttp

        with trace_scope(trace_context, "llm"):
            base = await self._base_url()
            if base is None:
                return {"error": "no llm_url or llm_model_path configured", **self.where}
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(
                    method, f"{base}{path}", json=None if body is None else dict(body)
                ) as response,
            ):
                answer: dict[str, Any] = await response.json(content_type=None)
                return {"status": response.status, "answer": answer, **self.where}

    async def __del__(self) -> None:
        """Serve's replica shutdown: stop the supervised server (its child also dies with the
        replica's process by PR_SET_PDEATHSIG)."""
        server = getattr(self, "server", None)  # absent when __init__ failed
        if server is not None:
            await server.stop()


class StageTimeout(Exception):
    """A stage did not answer within its timeout (its host is gone, or it is overloaded)."""


async def _call(response: Any, timeout_s: float, stage: str) -> Any:
    """Await a :class:`DeploymentResponse` for at most ``timeout_s``; cancel it past that."""
    try:
        return await asyncio.wait_for(response, timeout_s)
    except TimeoutError:
        response.cancel()
        raise StageTimeout(f"{stage} did not answer within {timeout_s:g} s") from None


def _arrays(body: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(body), allow_pickle=False) as loaded:
        return {k: loaded[k] for k in loaded.files}


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}, **extra}, status_code=status)


@serve.deployment(name="VigilIngress")
class VigilIngress:
    """The application's HTTP entry: one analysis (or one stage) per call."""

    def __init__(
        self,
        detector: DeploymentHandle[Any],
        zoo: DeploymentHandle[Any],
        llm: DeploymentHandle[Any],
        args: Mapping[str, Any],
    ) -> None:
        self.args: AppArgs = parse_args(args)
        self.detector = detector
        self.zoo = zoo
        self.llm = llm
        self.registry = Registry()
        self.served = set(self.args.zoo_models or self.registry.names())

    async def __call__(self, request: Request) -> JSONResponse:
        trace = {k: v for k, v in request.headers.items() if k.lower() in TRACE_HEADERS}
        path = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        try:
            if request.method == "GET" and path == "healthz":
                return JSONResponse({"ok": True})
            if request.method == "GET" and path == "zoo_status":
                return JSONResponse(await self._zoo_status(request.query_params["model"]))
            if request.method == "GET" and path == "models":  # GET /v1/models (OpenAI's)
                listed = self.llm.models.remote(trace)
                return _as_served(await _call(listed, self.args.timeout("llm"), "llm"))
            body = await request.body()
            if path == "classes":
                described = await _call(
                    self.detector.describe.remote(), self.args.timeout("detector"), "detector"
                )
                return JSONResponse(described)
            if path == "detect":
                return JSONResponse(await self._detect(body, trace))
            if path == "enrich":
                wanted = request.query_params.get("models")
                models = None if wanted is None else [m for m in wanted.split(",") if m]
                camera = request.query_params.get("camera")
                return JSONResponse(await self._enrich(body, models, camera, trace))
            if path == "analyze":
                return JSONResponse(await self._analyze(request, body, trace))
            if path == "llm":
                return JSONResponse(await self._llm(json.loads(body), trace))
            if path == "completions":  # POST /v1/chat/completions: the add-on's LLM_MODE=ray
                return _as_served(await self._llm(json.loads(body), trace))
        except StageTimeout as err:
            return _error(504, "stage_unavailable", str(err))
        except BackPressureError as err:
            return _error(429, "busy", str(err))
        except RayError as err:  # the stage's replica died under the call (its host is gone)
            return _error(504, "stage_unavailable", f"{type(err).__name__}: {err}")
        except (ValueError, KeyError, ImageError) as err:
            return _error(400, "bad_request", str(err))
        return _error(404, "not_found", f"no route {request.url.path}")

    async def _detect(self, body: bytes, trace: Mapping[str, str]) -> dict[str, Any]:
        """A batch of BGR images (npz ``0``..``n-1``) → one detection list per image."""
        arrays = _arrays(body)
        images = [arrays[str(i)] for i in range(len(arrays))]
        timeout = self.args.timeout("detector")
        answers = await asyncio.gather(
            *(_call(self.detector.detect.remote(p, trace), timeout, "detector") for p in images)
        )
        return {"results": answers}

    async def _enrich(
        self,
        body: bytes,
        models: Sequence[str] | None,
        camera: str | None,
        trace: Mapping[str, str],
    ) -> dict[str, Any]:
        """A frame (npz ``pixels``, ``detections`` as JSON) through ``models`` (default: the
        served models its detections trigger)."""
        arrays = _arrays(body)
        rows = json.loads(str(arrays["detections"]))
        frame = Frame(arrays["pixels"], tuple(detection_of(r) for r in rows), camera or None)
        chosen = self._triggered(frame.detections) if models is None else models
        return await self._run_zoo(frame, chosen, trace)

    def _triggered(self, detections: Sequence[Detection]) -> list[str]:
        classes = {d.class_name for d in detections}
        return [s.name for s in self.registry.triggered_by(classes) if s.name in self.served]

    async def _run_zoo(
        self, frame: Frame, models: Sequence[str], trace: Mapping[str, str]
    ) -> dict[str, Any]:
        """Each model on its multiplexed replica, at once; a model past the stage timeout is
        skipped with ``stage_unavailable`` and the stage is named missing."""
        unknown = sorted(set(models) - self.served)
        if unknown:
            raise ValueError(f"models not served here: {', '.join(unknown)}")
        timeout = self.args.timeout("zoo")

        async def one(name: str) -> tuple[str, dict[str, Any] | Exception]:
            handle = self.zoo.options(multiplexed_model_id=name)
            try:
                return name, await _call(handle.infer.remote(frame, trace), timeout, "zoo")
            except Exception as err:  # one model's failure costs only its own result
                return name, err

        results: dict[str, Any] = {}
        skipped: dict[str, dict[str, str]] = {}
        missing: list[str] = []
        for name, answer in await asyncio.gather(*(one(m) for m in models)):
            if isinstance(answer, StageTimeout):
                skipped[name] = {"reason": "stage_unavailable", "message": str(answer)}
                if "zoo" not in missing:
                    missing.append("zoo")
            elif isinstance(answer, Exception):
                skipped[name] = {"reason": "error", "message": f"{type(answer).__name__}: {answer}"}
            else:
                results[name] = answer
        return {"results": results, "skipped": skipped, "missing_stages": missing}

    async def _analyze(
        self, request: Request, body: bytes, trace: Mapping[str, str]
    ) -> dict[str, Any]:
        """One analysis' model stages: decode, detect, the zoo models the detections trigger."""
        started = time.perf_counter()
        image = await asyncio.to_thread(
            decode,
            body,
            max_pixels=self.args.max_pixels,
            content_type=_image_type(request.headers.get("content-type")),
            max_side=self.args.max_side,
        )
        timings: dict[str, float] = {"decode": _ms(started)}
        started = time.perf_counter()
        detected = await _call(
            self.detector.detect.remote(image.pixels, trace),
            self.args.timeout("detector"),
            "detector",
        )
        timings["detector"] = _ms(started)
        detections = tuple(detection_of(r) for r in detected["detections"])
        camera = request.query_params.get("camera")
        wanted = request.query_params.get("models")
        if wanted is not None:
            models = [m for m in wanted.split(",") if m]
        else:
            models = self._triggered(detections)
        started = time.perf_counter()
        zoo = await self._run_zoo(Frame(image.pixels, detections, camera), models, trace)
        timings["zoo"] = _ms(started)
        missing = list(zoo["missing_stages"])
        return {
            "detections": detected["detections"],
            "detector": {k: v for k, v in detected.items() if k != "detections"},
            "enrichments": {"results": zoo["results"], "skipped": zoo["skipped"]},
            "degraded": bool(missing),
            "missing_stages": missing,
            "timings_ms": timings,
        }

    async def _zoo_status(self, model: str) -> dict[str, Any]:
        """The zoo on the replica Serve routes ``model`` to (the one that has it loaded, if
        any): its models, bytes and Serve's per-replica limit. Read-only."""
        if model not in self.served:
            raise ValueError(f"model not served here: {model}")
        handle = self.zoo.options(multiplexed_model_id=model)
        status: dict[str, Any] = await _call(
            handle.status.remote(), self.args.timeout("zoo"), "zoo"
        )
        return status

    async def _llm(self, body: Mapping[str, Any], trace: Mapping[str, str]) -> dict[str, Any]:
        answer: dict[str, Any] = await _call(
            self.llm.complete.remote(body, trace), self.args.timeout("llm"), "llm"
        )
        return answer


def _as_served(forwarded: Mapping[str, Any]) -> JSONResponse:
    """The LLM server's answer with its own status (an OpenAI client reads it unchanged);
    a stage without a server is unavailable (503)."""
    if "error" in forwarded:
        return _error(503, "stage_unavailable", str(forwarded["error"]))
    return JSONResponse(forwarded["answer"], status_code=int(forwarded["status"]))


def _image_type(content_type: str | None) -> str | None:
    """The upload's declared image type; a client's generic form type says nothing."""
    return content_type if content_type and content_type.startswith("image/") else None


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _deployment(decorated: type) -> Any:
    """``@serve.deployment`` turned the class into a Deployment; mypy still sees the class."""
    return decorated


def build(raw_args: dict[str, Any]) -> Any:
    """The application builder ``serve deploy`` imports (``import_path: ...app:build``)."""
    args = parse_args(raw_args)
    models_dir = os.path.expanduser(args.models_dir)
    detector = (
        _deployment(DetectorDeployment)
        .options(**args.deployment_options("detector"))
        .bind(dict(args.detector), args.max_batch_size, args.batch_wait_timeout_s)
    )
    zoo = (
        _deployment(ZooDeployment)
        .options(**args.deployment_options("zoo"))
        .bind(
            dict(args.zoo),
            None if args.zoo_models is None else list(args.zoo_models),
            args.zoo_budget_bytes,
            models_dir,
            dict(args.registry),
        )
    )
    llm = (
        _deployment(LLMDeployment)
        .options(**args.deployment_options("llm"))
        .bind(args.llm_url, args.llm_model_path, args.timeout("llm"))
    )
    ingress = _deployment(VigilIngress).options(**args.deployment_options("ingress"))
    return ingress.bind(detector, zoo, llm, raw_args)
