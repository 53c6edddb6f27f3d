"""HTTP client for the Vigil add-on (the contract is docs/API.md).

The client runs on Home Assistant's shared aiohttp session, speaks only HTTP and turns
every failure into one of the typed errors below. Responses are parsed into frozen
dataclasses; a response that does not have the documented shape is an error too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from yarl import URL

# --------------------------------------------------------------------------- errors


class VigilError(Exception):
    """Base error of the Vigil client."""

    def __init__(self, message: str, *, code: str = "error", status: int | None = None) -> None:
        """Initialize the error."""
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class VigilConnectionError(VigilError):
    """The add-on could not be reached or did not answer in time."""


class VigilAuthenticationError(VigilError):
    """The add-on refused the API token (HTTP 401)."""


class VigilResponseError(VigilError):
    """The add-on answered with an error, or with something not in the contract."""


class VigilNotFoundError(VigilResponseError):
    """The add-on does not know the route or the named thing (HTTP 404)."""


class VigilModelNotInstalledError(VigilResponseError):
    """The add-on lacks the files of a model it was asked to use."""


# --------------------------------------------------------------------------- models


def _dict(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise VigilResponseError(f"{what} is not an object", code="invalid_response")
    return value


def _list(value: Any, what: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise VigilResponseError(f"{what} is not a list", code="invalid_response")
    return value


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(value)


def _float(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True, kw_only=True)
class ComputeDevice:
    """A device the add-on can place models on (a GPU or the CPU)."""

    id: str
    kind: str
    name: str
    present: bool
    budget_bytes: int
    used_bytes: int
    total_bytes: int
    services: tuple[str, ...]

    @classmethod
    def from_dict(cls, data: Any) -> ComputeDevice:
        """Parse a device object."""
        d = _dict(data, "device")
        return cls(
            id=_str(d.get("id")),
            kind=_str(d.get("kind")),
            name=_str(d.get("name")),
            present=bool(d.get("present", False)),
            budget_bytes=_int(d.get("budget_bytes")),
            used_bytes=_int(d.get("used_bytes")),
            total_bytes=_int(d.get("total_bytes")),
            services=tuple(_str(s) for s in _list(d.get("services"), "services")),
        )


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else _float(value)


def _strs(value: Any, what: str) -> tuple[str, ...]:
    return tuple(_str(s) for s in _list(value, what))


@dataclass(frozen=True, kw_only=True)
class Model:
    """A model the add-on serves: the detector, the face embedder, the LLM or a zoo model."""

    name: str
    kind: str
    """detector, face_embedder, llm or zoo."""
    backend: str
    device: str
    loaded: bool
    installed: bool
    vram_bytes: int
    state: str = "unloaded"
    """not_installed, unloaded, loading, loaded, unloading or failed."""
    measured_bytes: int | None = None
    """Measured after load and one warm-up inference (None before)."""
    estimated_bytes: int | None = None
    accounted_bytes: int = 0
    """What the device's budget counts for it now."""
    priority: str | None = None
    category: str | None = None
    refcount: int = 0
    pinned: bool = False
    unloadable: bool = True
    unload_pending: bool = False
    error: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> Model:
        """Parse a model object."""
        d = _dict(data, "model")
        loaded = bool(d.get("loaded", False))
        return cls(
            name=_str(d.get("name")),
            kind=_str(d.get("kind")),
            backend=_str(d.get("backend")),
            device=_str(d.get("device")),
            loaded=loaded,
            installed=bool(d.get("installed", True)),
            vram_bytes=_int(d.get("vram_bytes")),
            state=_str(d.get("state"), "loaded" if loaded else "unloaded"),
            measured_bytes=_opt_int(d.get("measured_bytes")),
            estimated_bytes=_opt_int(d.get("estimated_bytes")),
            accounted_bytes=_int(d.get("accounted_bytes")),
            priority=_opt_str(d.get("priority")),
            category=_opt_str(d.get("category")),
            refcount=_int(d.get("refcount")),
            pinned=bool(d.get("pinned", False)),
            unloadable=bool(d.get("unloadable", True)),
            unload_pending=bool(d.get("unload_pending", False)),
            error=_opt_str(d.get("error")),
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the model as a plain dict (an action's response)."""
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class ZooModel:
    """A model the zoo holds memory for on one device (GET /v1/zoo/status)."""

    name: str
    category: str
    priority: str
    device: str
    state: str
    estimated_bytes: int
    measured_bytes: int | None
    accounted_bytes: int
    peak_bytes: int | None
    refcount: int
    pinned: bool
    unload_pending: bool
    idle_ttl_s: float
    idle_s: float | None
    load_seconds: float | None
    loads: int
    evictions: int
    error: str | None

    @classmethod
    def from_dict(cls, data: Any) -> ZooModel:
        """Parse a zoo model object."""
        d = _dict(data, "zoo model")
        return cls(
            name=_str(d.get("name")),
            category=_str(d.get("category")),
            priority=_str(d.get("priority")),
            device=_str(d.get("device")),
            state=_str(d.get("state")),
            estimated_bytes=_int(d.get("estimated_bytes")),
            measured_bytes=_opt_int(d.get("measured_bytes")),
            accounted_bytes=_int(d.get("accounted_bytes")),
            peak_bytes=_opt_int(d.get("peak_bytes")),
            refcount=_int(d.get("refcount")),
            pinned=bool(d.get("pinned", False)),
            unload_pending=bool(d.get("unload_pending", False)),
            idle_ttl_s=_float(d.get("idle_ttl_s")),
            idle_s=_opt_float(d.get("idle_s")),
            load_seconds=_opt_float(d.get("load_seconds")),
            loads=_int(d.get("loads")),
            evictions=_int(d.get("evictions")),
            error=_opt_str(d.get("error")),
        )


@dataclass(frozen=True, kw_only=True)
class ZooDevice:
    """The zoo on one device (a GPU or the CPU): its budget, what uses it, what waits.

    Memory is in the add-on's MB (MiB); ``used_mb`` is everything the budget counts: the
    zoo's models and the co-tenants (detector, face embedder, LLM) on the device.
    """

    device: str
    budget_mb: float
    used_mb: float
    available_mb: float
    utilization_percent: float
    zoo_used_mb: float
    cotenants_mb: float
    loaded_models: tuple[ZooModel, ...]
    registered_models: tuple[str, ...]
    pending_loads: tuple[str, ...]
    overruns: int

    @classmethod
    def from_dict(cls, data: Any) -> ZooDevice:
        """Parse a zoo device object."""
        d = _dict(data, "zoo device")
        device = _str(d.get("device"))
        if not device:
            raise VigilResponseError("a zoo device has no name", code="invalid_response")
        return cls(
            device=device,
            budget_mb=_float(d.get("vram_budget_mb")),
            used_mb=_float(d.get("vram_used_mb")),
            available_mb=_float(d.get("vram_available_mb")),
            utilization_percent=_float(d.get("vram_utilization_percent")),
            zoo_used_mb=_float(d.get("zoo_used_mb")),
            cotenants_mb=_float(d.get("cotenants_mb")),
            loaded_models=tuple(
                ZooModel.from_dict(m) for m in _list(d.get("loaded_models"), "loaded_models")
            ),
            registered_models=_strs(d.get("registered_models"), "registered_models"),
            pending_loads=_strs(d.get("pending_loads"), "pending_loads"),
            overruns=_int(d.get("overruns")),
        )


@dataclass(frozen=True, kw_only=True)
class ZooStatus:
    """The add-on's GET /v1/zoo/status answer: the model zoo per device."""

    enabled: bool
    devices: tuple[ZooDevice, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    def device(self, device: str) -> ZooDevice | None:
        """Return one device's zoo, if the add-on reports it."""
        return next((d for d in self.devices if d.device == device), None)

    @classmethod
    def from_dict(cls, data: Any) -> ZooStatus:
        """Parse a /v1/zoo/status answer."""
        d = _dict(data, "zoo status")
        return cls(
            enabled=bool(d.get("enabled", False)),
            devices=tuple(ZooDevice.from_dict(x) for x in _list(d.get("devices"), "devices")),
            raw=d,
        )


@dataclass(frozen=True, kw_only=True)
class HealthIssue:
    """Something the add-on wants repaired (becomes a repair issue)."""

    code: str
    message: str
    severity: str = "warning"
    """How serious the add-on says it is: info, warning, error or critical."""
    service: str | None = None
    model: str | None = None

    @property
    def subject(self) -> str:
        """Return what the issue is about (a service or a model name)."""
        return self.service or self.model or ""

    @classmethod
    def from_dict(cls, data: Any) -> HealthIssue:
        """Parse an issue object."""
        d = _dict(data, "issue")
        return cls(
            code=_str(d.get("code"), "unknown"),
            message=_str(d.get("message")),
            severity=_str(d.get("severity"), "warning"),
            service=_opt_str(d.get("service")),
            model=_opt_str(d.get("model")),
        )


@dataclass(frozen=True, kw_only=True)
class Privacy:
    """The add-on's privacy options (its /health `privacy` object)."""

    blur_unknown_faces: bool
    """Faces of people not enrolled are blurred in stored snapshots."""
    local_only: bool
    """The language model is only reached on loopback or the private LAN."""

    @classmethod
    def from_dict(cls, data: Any) -> Privacy | None:
        """Parse the privacy object; None for an add-on that does not report one."""
        if data is None:
            return None
        d = _dict(data, "privacy")
        return cls(
            blur_unknown_faces=bool(d.get("blur_unknown_faces", False)),
            local_only=bool(d.get("local_only", False)),
        )


@dataclass(frozen=True, kw_only=True)
class Health:
    """The add-on's GET /health answer."""

    status: str
    version: str
    instance_id: str
    uptime_seconds: float
    cuda_available: bool
    model_loaded: bool
    devices: tuple[ComputeDevice, ...]
    models: tuple[Model, ...]
    issues: tuple[HealthIssue, ...]
    privacy: Privacy | None = None
    """None: an add-on from before the privacy options."""
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def gpus(self) -> tuple[ComputeDevice, ...]:
        """Return the GPUs present (one the configuration asks for may be absent)."""
        return tuple(d for d in self.devices if d.kind != "cpu" and d.present)

    @property
    def models_loaded(self) -> int:
        """Return how many models are loaded."""
        return sum(1 for m in self.models if m.loaded)

    @classmethod
    def from_dict(cls, data: Any) -> Health:
        """Parse a /health answer."""
        d = _dict(data, "health")
        instance_id = _str(d.get("instance_id"))
        if not instance_id:
            raise VigilResponseError("health has no instance_id", code="invalid_response")
        return cls(
            status=_str(d.get("status"), "unknown"),
            version=_str(d.get("version")),
            instance_id=instance_id,
            uptime_seconds=_float(d.get("uptime_seconds")),
            cuda_available=bool(d.get("cuda_available", False)),
            model_loaded=bool(d.get("model_loaded", False)),
            devices=tuple(ComputeDevice.from_dict(x) for x in _list(d.get("devices"), "devices")),
            models=tuple(Model.from_dict(x) for x in _list(d.get("models"), "models")),
            issues=tuple(HealthIssue.from_dict(x) for x in _list(d.get("issues"), "issues")),
            privacy=Privacy.from_dict(d.get("privacy")),
            raw=d,
        )


@dataclass(frozen=True, kw_only=True)
class Factor:
    """One named contribution to a risk score."""

    name: str
    points: float
    detail: str

    @classmethod
    def from_dict(cls, data: Any) -> Factor:
        """Parse a factor object."""
        d = _dict(data, "factor")
        return cls(
            name=_str(d.get("name")), points=_float(d.get("points")), detail=_str(d.get("detail"))
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the factor as a plain dict."""
        return {"name": self.name, "points": self.points, "detail": self.detail}


@dataclass(frozen=True, kw_only=True)
class Detection:
    """One detected object."""

    label: str
    confidence: float
    x: int
    y: int
    width: int
    height: int

    @classmethod
    def from_dict(cls, data: Any) -> Detection:
        """Parse a detection object."""
        d = _dict(data, "detection")
        box = _dict(d.get("bbox", {}), "bbox")
        return cls(
            label=_str(d.get("class")),
            confidence=_float(d.get("confidence")),
            x=_int(box.get("x")),
            y=_int(box.get("y")),
            width=_int(box.get("width")),
            height=_int(box.get("height")),
        )


@dataclass(frozen=True, kw_only=True)
class DetectResult:
    """The add-on's POST /v1/detect answer."""

    detections: tuple[Detection, ...]
    width: int
    height: int
    inference_time_ms: float
    model: str

    @classmethod
    def from_dict(cls, data: Any) -> DetectResult:
        """Parse a /v1/detect answer."""
        d = _dict(data, "detect result")
        image = _dict(d.get("image", {}), "image")
        return cls(
            detections=tuple(
                Detection.from_dict(x) for x in _list(d.get("detections"), "detections")
            ),
            width=_int(image.get("width")),
            height=_int(image.get("height")),
            inference_time_ms=_float(d.get("inference_time_ms")),
            model=_str(d.get("model")),
        )


@dataclass(frozen=True, kw_only=True)
class Threat:
    """A weapon or other threat an enrichment model found."""

    label: str
    confidence: float
    source: str


@dataclass(frozen=True, kw_only=True)
class Pet:
    """An animal the pet classifier named."""

    species: str
    label: str
    confidence: float
    household: bool
    """A cat or dog breed (a household pet), not a fox, coyote, raccoon, bear..."""


@dataclass(frozen=True, kw_only=True)
class Vehicle:
    """A vehicle the vehicle classifier typed (car, pickup, van, truck, bus, ...)."""

    vehicle_type: str
    confidence: float


@dataclass(frozen=True, kw_only=True)
class Plate:
    """A number plate read."""

    text: str
    confidence: float


@dataclass(frozen=True, kw_only=True)
class EnrichmentSkip:
    """Why a model the detections triggered gave no result (zoo_busy, not_installed, ...)."""

    reason: str
    message: str


def _items(results: Mapping[str, Mapping[str, Any]], key: str) -> list[Mapping[str, Any]]:
    """Every result's objects under ``key``, whichever model gave them.

    Read by field, not by model name: a user's own YOLO threat model answers ``threats``
    as the built-in threat detector does, and both count.
    """
    found: list[Mapping[str, Any]] = []
    for result in results.values():
        value = result.get(key)
        if isinstance(value, list):
            found.extend(item for item in value if isinstance(item, Mapping))
    return found


@dataclass(frozen=True, kw_only=True)
class Enrichments:
    """The model zoo's results on one analysed image, and the triggered models that gave none.

    ``results`` keeps each model's own answer by model name; the typed views below read the
    fields the model families share (``threats``, ``persons[].posture``, ``pets``,
    ``vehicles``, ``plates``).
    """

    results: Mapping[str, Mapping[str, Any]]
    skipped: Mapping[str, EnrichmentSkip]

    @classmethod
    def from_dict(cls, data: Any) -> Enrichments:
        """Parse an event's ``enrichments`` (missing: none)."""
        d = _dict(data if data is not None else {}, "enrichments")
        results = _dict(d.get("results", {}), "enrichments.results")
        skipped = _dict(d.get("skipped", {}), "enrichments.skipped")
        return cls(
            results={
                str(name): _dict(result, f"enrichment {name}") for name, result in results.items()
            },
            skipped={
                str(name): EnrichmentSkip(
                    reason=_str(_dict(skip, f"skipped {name}").get("reason"), "error"),
                    message=_str(skip.get("message")),
                )
                for name, skip in skipped.items()
            },
        )

    @property
    def threats(self) -> tuple[Threat, ...]:
        """Every threat found, most confident first."""
        found = (
            Threat(
                label=_str(t.get("class_name")),
                confidence=_float(t.get("confidence")),
                source=_str(t.get("source")),
            )
            for t in _items(self.results, "threats")
        )
        return tuple(sorted((t for t in found if t.label), key=lambda t: -t.confidence))

    @property
    def postures(self) -> tuple[str, ...]:
        """The distinct known postures of the persons posed, sorted."""
        postures = {_str(p.get("posture")) for p in _items(self.results, "persons")}
        return tuple(sorted(postures - {"", "unknown"}))

    @property
    def pets(self) -> tuple[Pet, ...]:
        """Every animal classified, most confident first."""
        found = (
            Pet(
                species=_str(p.get("species")),
                label=_str(p.get("label")),
                confidence=_float(p.get("confidence")),
                household=bool(p.get("is_household_pet", False)),
            )
            for p in _items(self.results, "pets")
        )
        return tuple(sorted((p for p in found if p.species), key=lambda p: -p.confidence))

    @property
    def vehicles(self) -> tuple[Vehicle, ...]:
        """Every vehicle typed, most confident first."""
        found = (
            Vehicle(
                vehicle_type=_str(v.get("vehicle_type")), confidence=_float(v.get("confidence"))
            )
            for v in _items(self.results, "vehicles")
        )
        return tuple(sorted((v for v in found if v.vehicle_type), key=lambda v: -v.confidence))

    @property
    def plates(self) -> tuple[Plate, ...]:
        """Every plate read, most confident first."""
        found = (
            Plate(text=_str(p.get("text")), confidence=_float(p.get("confidence")))
            for p in _items(self.results, "plates")
        )
        return tuple(sorted((p for p in found if p.text), key=lambda p: -p.confidence))


@dataclass(frozen=True, kw_only=True)
class AnalysisEvent:
    """One analysed image: the add-on's stored event (POST /v1/analyze, GET /v1/events)."""

    id: str
    camera: str
    timestamp: datetime
    risk_score: int
    risk_level: str
    summary: str
    reasoning: str
    factors: tuple[Factor, ...]
    detections: tuple[Detection, ...]
    person_count: int
    vehicle_count: int
    animal_count: int
    llm_status: str
    notify: bool
    timings_ms: Mapping[str, float]
    snapshot_url: str | None
    revision: int = 1
    """1: the rules' verdict; 2: refined by the LLM (the same event id)."""
    phase: str = "initial"
    """"initial" or "refined": which revision this is."""
    enrichments: Enrichments = field(default_factory=lambda: Enrichments(results={}, skipped={}))
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def addon_time_ms(self) -> float:
        """Return the add-on's own processing time (sum of its stage timings)."""
        return sum(self.timings_ms.values())

    @classmethod
    def from_dict(cls, data: Any) -> AnalysisEvent:
        """Parse an event object."""
        d = _dict(data, "event")
        event_id = _str(d.get("id"))
        level = _str(d.get("risk_level"))
        try:
            timestamp = datetime.fromisoformat(_str(d.get("timestamp")))
        except ValueError as err:
            raise VigilResponseError(
                "event has no valid timestamp", code="invalid_response"
            ) from err
        if not event_id or not level or timestamp.tzinfo is None:
            raise VigilResponseError(
                "event lacks id, risk_level or a zoned timestamp", code="invalid_response"
            )
        counts = _dict(d.get("counts", {}), "counts")
        timings = _dict(d.get("timings_ms", {}), "timings_ms")
        return cls(
            id=event_id,
            camera=_str(d.get("camera")),
            timestamp=timestamp,
            risk_score=max(0, min(100, round(_float(d.get("risk_score"))))),
            risk_level=level,
            summary=_str(d.get("summary")),
            reasoning=_str(d.get("reasoning")),
            factors=tuple(Factor.from_dict(x) for x in _list(d.get("factors"), "factors")),
            detections=tuple(
                Detection.from_dict(x) for x in _list(d.get("detections"), "detections")
            ),
            person_count=_int(counts.get("person")),
            vehicle_count=_int(counts.get("vehicle")),
            animal_count=_int(counts.get("animal")),
            llm_status=_str(d.get("llm_status"), "skipped"),
            revision=_int(d.get("revision"), 1),
            phase=_str(d.get("phase"), "initial"),
            notify=bool(d.get("notify", False)),
            timings_ms={str(k): _float(v) for k, v in timings.items()},
            snapshot_url=_opt_str(d.get("snapshot_url")),
            enrichments=Enrichments.from_dict(d.get("enrichments")),
            raw=d,
        )


@dataclass(frozen=True, kw_only=True)
class Person:
    """An enrolled person."""

    id: str
    name: str
    embeddings: int

    @classmethod
    def from_dict(cls, data: Any) -> Person:
        """Parse a person object."""
        d = _dict(data, "person")
        return cls(
            id=_str(d.get("id")), name=_str(d.get("name")), embeddings=_int(d.get("embeddings"))
        )


@dataclass(frozen=True, kw_only=True)
class GpuAssignment:
    """The add-on's GET/PUT /v1/gpu-assignment answer: services and budgets per device.

    `assignment` and `pending` are the config's per-device entries (device id → `budget_gb`,
    absent for the default, and `services`), as PUT takes them back.
    """

    devices: tuple[ComputeDevice, ...]
    """As the add-on runs now."""
    assignment: Mapping[str, Mapping[str, Any]]
    pending: Mapping[str, Mapping[str, Any]] | None
    """Written for the add-on's next start; None when nothing waits for a restart."""
    restart_required: bool
    override_path: str

    @property
    def gpus(self) -> tuple[ComputeDevice, ...]:
        """Return the GPUs present, lowest id first."""
        return tuple(d for d in self.devices if d.kind == "cuda" and d.present)

    @classmethod
    def from_dict(cls, data: Any) -> GpuAssignment:
        """Parse a /v1/gpu-assignment answer."""
        d = _dict(data, "gpu assignment")
        pending = d.get("pending")
        return cls(
            devices=tuple(ComputeDevice.from_dict(x) for x in _list(d.get("devices"), "devices")),
            assignment=_entries(d.get("assignment", {})),
            pending=None if pending is None else _entries(pending),
            restart_required=bool(d.get("restart_required", False)),
            override_path=_str(d.get("override_path")),
        )


def _entries(value: Any) -> dict[str, dict[str, Any]]:
    entries = _dict(value, "assignment")
    return {str(k): dict(_dict(v, f"assignment of {k}")) for k, v in entries.items()}


# --------------------------------------------------------------------------- client


@dataclass(frozen=True, kw_only=True)
class ImageUpload:
    """An image to send: its bytes and content type."""

    content: bytes
    content_type: str = "image/jpeg"


STREAM_SILENCE_S = 60.0
"""A stream that sends nothing for this long (4 missed keepalives) is dead: reconnect."""


def _stream_message(message: Mapping[str, str]) -> tuple[int, AnalysisEvent | None]:
    """One server-sent event: its stream id and the event revision in its data (if any)."""
    try:
        seq = int(message["id"])
        data = json.loads(message["data"]) if "data" in message else None
    except ValueError as err:
        raise VigilResponseError(
            "the event stream sent a malformed message", code="invalid_response"
        ) from err
    return seq, None if data is None else AnalysisEvent.from_dict(data)


class VigilClient:
    """Talks to one Vigil add-on."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        host: str,
        port: int,
        token: str | None = None,
        ssl: bool = False,
        request_timeout: float = 60.0,
        health_timeout: float = 10.0,
    ) -> None:
        """Initialize the client."""
        self._session = session
        self._token = token or None
        self._request_timeout = request_timeout
        self._health_timeout = health_timeout
        self.base_url = URL.build(scheme="https" if ssl else "http", host=host, port=port)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        time_limit: float | None = None,
        raw: bool = False,
    ) -> Any:
        """Send one request; return parsed JSON (or bytes when raw)."""
        all_headers = {"Accept": "application/json"}
        if self._token:
            all_headers["Authorization"] = f"Bearer {self._token}"
        if headers:
            all_headers.update(headers)
        url = self.base_url.with_path(path)
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                data=data,
                headers=all_headers,
                timeout=aiohttp.ClientTimeout(total=time_limit or self._request_timeout),
            ) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise self._error(resp.status, body)
                if raw:
                    return body
                try:
                    return json.loads(body)
                except ValueError as err:
                    raise VigilResponseError(
                        f"{method} {path}: the add-on's answer is not JSON",
                        code="invalid_response",
                        status=resp.status,
                    ) from err
        except TimeoutError as err:
            raise VigilConnectionError(
                f"{method} {path}: no answer from {self.base_url} in time", code="timeout"
            ) from err
        except aiohttp.ClientError as err:
            raise VigilConnectionError(
                f"{method} {path}: cannot reach {self.base_url}: {err}", code="cannot_connect"
            ) from err

    @staticmethod
    def _error(status: int, body: bytes) -> VigilError:
        """Turn an error response into a typed error."""
        code, message = f"http_{status}", f"HTTP {status}"
        try:
            err = json.loads(body)["error"]
            code = str(err.get("code") or code)
            message = str(err.get("message") or message)
        except ValueError, KeyError, TypeError, AttributeError:
            pass
        if status == 401:
            return VigilAuthenticationError(message, code=code, status=status)
        if code == "model_not_installed":
            return VigilModelNotInstalledError(message, code=code, status=status)
        if status == 404:
            return VigilNotFoundError(message, code=code, status=status)
        return VigilResponseError(message, code=code, status=status)

    # ------------------------------------------------------------------ routes

    async def health(self) -> Health:
        """GET /health (no authentication)."""
        return Health.from_dict(
            await self._request("GET", "/health", time_limit=self._health_timeout)
        )

    async def models(self) -> list[Model]:
        """GET /v1/models (authenticated: also verifies the token)."""
        data = _dict(
            await self._request("GET", "/v1/models", time_limit=self._health_timeout), "models"
        )
        return [Model.from_dict(m) for m in _list(data.get("models"), "models")]

    async def verify_auth(self) -> None:
        """Raise VigilAuthenticationError when the token is refused.

        The add-on checks the token before routing, so a 404 (an add-on without a model
        zoo yet) still means the token was accepted.
        """
        try:
            await self.models()
        except VigilNotFoundError:
            return

    async def detect(self, image: ImageUpload) -> DetectResult:
        """POST /v1/detect with a raw image body."""
        data = await self._request(
            "POST", "/v1/detect", data=image.content, headers={"Content-Type": image.content_type}
        )
        return DetectResult.from_dict(data)

    async def analyze(
        self,
        image: ImageUpload,
        *,
        camera: str,
        llm: bool | None = None,
        timestamp: datetime | None = None,
        zone: str | None = None,
        notify_level: str | None = None,
        home_state: Mapping[str, Any] | None = None,
    ) -> AnalysisEvent:
        """POST /v1/analyze (multipart): analyse one image, return the stored event.

        `home_state` is what the user's alarm, presence, door, lock and guest entities say
        (the add-on's HomeState object); the add-on scores it as evidence.

        `notify_level` is the level from which the add-on marks the event `notify`: the
        add-on alone decides `notify`, so the integration sends the camera's level with
        every analysis and never re-decides it.
        """
        form = aiohttp.FormData()
        form.add_field("image", image.content, content_type=image.content_type, filename="image")
        form.add_field("camera", camera)
        if notify_level is not None:
            form.add_field("notify_level", notify_level)
        if zone:
            form.add_field("zone", zone)
        if timestamp is not None:
            form.add_field("timestamp", timestamp.isoformat())
        if llm is not None:
            form.add_field("llm", "true" if llm else "false")
        if home_state is not None:
            form.add_field("home_state", json.dumps(home_state))
        return AnalysisEvent.from_dict(await self._request("POST", "/v1/analyze", data=form))

    async def stream_events(
        self, after: int | None = None
    ) -> AsyncIterator[tuple[int, AnalysisEvent | None]]:
        """GET /v1/events/stream: (stream id, event revision) as the add-on stores them.

        Resumes after stream id `after` (Last-Event-ID); None starts with the next revision.
        A message with an id and no event (None) tells the position without news: the add-on
        sends one on connecting, so a client that saw nothing yet can still resume from there.
        Ends when the add-on ends the stream; raises VigilConnectionError when the connection
        fails or stays silent for STREAM_SILENCE_S (the add-on sends a keepalive every 15 s).
        """
        headers = {"Accept": "text/event-stream"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        path = "/v1/events/stream"
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._health_timeout, sock_read=STREAM_SILENCE_S
        )
        try:
            async with self._session.get(
                self.base_url.with_path(path), headers=headers, timeout=timeout
            ) as resp:
                if resp.status >= 400:
                    raise self._error(resp.status, await resp.read())
                buffer = b""
                fields: dict[str, str] = {}
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for raw in lines:
                        line = raw.decode("utf-8", "replace").rstrip("\r")
                        if line:
                            if not line.startswith(":"):  # a comment: the keepalive
                                name, _, value = line.partition(":")
                                fields[name] = value.removeprefix(" ")
                            continue
                        message, fields = fields, {}
                        if "id" in message:
                            yield _stream_message(message)
        except TimeoutError as err:
            raise VigilConnectionError(
                f"GET {path}: {self.base_url} sent nothing for {STREAM_SILENCE_S:.0f} s",
                code="timeout",
            ) from err
        except aiohttp.ClientError as err:
            raise VigilConnectionError(
                f"GET {path}: cannot reach {self.base_url}: {err}", code="cannot_connect"
            ) from err

    async def latest_event(self, camera: str) -> AnalysisEvent | None:
        """GET /v1/events?camera=…&limit=1: the camera's newest event, if any."""
        data = _dict(
            await self._request("GET", "/v1/events", params={"camera": camera, "limit": "1"}),
            "events",
        )
        events = _list(data.get("events"), "events")
        return AnalysisEvent.from_dict(events[0]) if events else None

    async def snapshot(self, event_id: str) -> bytes:
        """GET /v1/events/{id}/snapshot.jpg: the annotated snapshot."""
        data: bytes = await self._request("GET", f"/v1/events/{event_id}/snapshot.jpg", raw=True)
        return data

    async def enroll_person(self, name: str, images: Sequence[ImageUpload]) -> Person:
        """POST /v1/people: enrol a person from one or more images."""
        form = aiohttp.FormData()
        form.add_field("name", name)
        for i, image in enumerate(images):
            form.add_field(
                "image", image.content, content_type=image.content_type, filename=f"image{i}"
            )
        return Person.from_dict(await self._request("POST", "/v1/people", data=form))

    async def zoo_status(self) -> ZooStatus | None:
        """GET /v1/zoo/status: the model zoo per device (None: an add-on without a zoo)."""
        try:
            data = await self._request("GET", "/v1/zoo/status", time_limit=self._health_timeout)
        except VigilNotFoundError:
            return None
        return ZooStatus.from_dict(data)

    async def load_model(self, name: str, *, pin: bool | None = None) -> Model:
        """POST /v1/models/{name}/load; ``pin`` pins (True) or unpins (False) a zoo model.

        A zoo model that cannot get memory in time answers 503 ``zoo_busy``; one whose
        files are absent 409 ``model_not_installed``.
        """
        params = None if pin is None else {"pin": "true" if pin else "false"}
        return Model.from_dict(
            await self._request("POST", f"/v1/models/{name}/load", params=params)
        )

    async def gpu_assignment(
        self, entries: Mapping[str, Mapping[str, Any]] | None = None
    ) -> GpuAssignment:
        """GET /v1/gpu-assignment, or PUT `entries` (device id → budget_gb, services): the
        add-on writes them for its next start and answers `restart_required`."""
        if entries is None:
            return GpuAssignment.from_dict(await self._request("GET", "/v1/gpu-assignment"))
        body = json.dumps({"devices": {k: dict(v) for k, v in entries.items()}})
        return GpuAssignment.from_dict(
            await self._request(
                "PUT",
                "/v1/gpu-assignment",
                data=body,
                headers={"Content-Type": "application/json"},
            )
        )

    async def feedback(self, event_id: str, verdict: str, note: str | None = None) -> AnalysisEvent:
        """POST /v1/events/{id}/feedback: the user's verdict on an event (`none` withdraws it);
        the add-on calibrates the camera's later events by it and answers the event."""
        body: dict[str, str] = {"verdict": verdict}
        if note:
            body["note"] = note
        return AnalysisEvent.from_dict(
            await self._request(
                "POST",
                f"/v1/events/{event_id}/feedback",
                data=json.dumps(body),
                headers={"Content-Type": "application/json"},
            )
        )

    async def unload_model(self, name: str) -> Model:
        """POST /v1/models/{name}/unload."""
        return Model.from_dict(await self._request("POST", f"/v1/models/{name}/unload"))
