"""The add-on's one configuration schema: a YAML file, then environment overrides.

Every other module receives typed values from :class:`Settings`; nothing else reads files or
the environment for configuration. Environment names follow the seeds' names where they exist
(``HOST``, ``PORT``, ``YOLO26_MODEL_PATH``, ``YOLO26_CONFIDENCE``, ``VRAM_BUDGET_GB``) so users of
the seed services can keep their ``.env`` files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import voluptuous as vol
import yaml

from addon_server.reasoning.endpoint import normalise_base_url, redact
from addon_server.reasoning.gate import LLMPolicy
from addon_server.reasoning.locality import (
    NotLocalError,
    UnresolvedHostError,
    check_url,
    resolve_blocking,
)
from addon_server.reasoning.rules import RULE_NAMES, RuleConfig
from addon_server.reasoning.settings import LLMMode, ReasoningSettings, ResponseFormat

DEFAULT_CONFIG_PATH = Path("vigil.yaml")
"""Looked up in the working directory; when it is absent the built-in defaults apply."""
DEVICES_FILE = "devices.yaml"
"""In ``deploy.override_dir``: the per-device entries the add-on wrote when Home Assistant
applied a GPU assignment (``PUT /v1/gpu-assignment``). Read at start, they replace the config's
per-device entries, so the new budgets apply once the user restarts the container."""

SECURITY_CLASSES: tuple[str, ...] = (
    "person",
    "car",
    "truck",
    "dog",
    "cat",
    "bird",
    "bicycle",
    "motorcycle",
    "bus",
)
"""The seeds' security-relevant COCO classes: what /v1/detect returns unless asked otherwise."""

SERVICES: tuple[str, ...] = ("detector", "llm", "zoo")
COMPILE_MODES: tuple[str, ...] = ("off", "default", "reduce-overhead", "max-autotune-no-cudagraphs")
"""``detector.gpu_path.compile``: off, or the ``torch.compile`` mode (YAML booleans mean off or
default)."""
DEVICE_ID = re.compile(r"^(cpu|cuda:\d+)$")
BACKENDS = ("auto", "darknet", "ultralytics", "triton", "ray")
RAY_DETECTOR_FALLBACKS = ("local", "none")
TRITON_PROTOCOLS = ("grpc", "http")


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and the reason."""


def _device_id(value: Any) -> str:
    text = str(value).strip()
    if not DEVICE_ID.match(text):
        raise vol.Invalid(f"expected 'cpu' or 'cuda:N', got {text!r}")
    return text


def _device_or_auto(value: Any) -> str:
    text = str(value).strip()
    return "auto" if text == "auto" else _device_id(text)


def _compile_mode(value: Any) -> str:
    """A ``torch.compile`` mode; booleans (YAML's or an env var's words) mean off or default."""
    text = str(value).strip().lower()
    with contextlib.suppress(vol.Invalid):
        text = "default" if vol.Boolean()(value) else "off"
    if text not in COMPILE_MODES:
        raise vol.Invalid(f"expected true, false or one of {', '.join(COMPILE_MODES)}")
    return text


def _multiple_of_32(value: int) -> int:
    if value % 32:
        raise vol.Invalid(f"must be a multiple of 32, got {value}")
    return value


CAMERA_ID = re.compile(r"^[a-z0-9_]{1,64}$")
CAMERA_ID_RULE = "1-64 characters of a-z, 0-9 and _"
"""The camera-id rule in words; the API's errors and the OpenAPI document quote it too."""


def is_camera_id(value: str) -> bool:
    """Whether all of ``value`` is a camera id (``match`` would let ``"front\\n"`` through)."""
    return CAMERA_ID.fullmatch(value) is not None


def _camera_id(value: str) -> str:
    if not is_camera_id(value):
        raise vol.Invalid(f"camera ids are {CAMERA_ID_RULE}, got {value!r}")
    return value


_PROBABILITY = vol.All(vol.Coerce(float), vol.Range(min=0.0, max=1.0))
_POSITIVE_INT = vol.All(vol.Coerce(int), vol.Range(min=1))
_BOOL = vol.Boolean()
_SECONDS = vol.All(vol.Coerce(float), vol.Range(min=0.01, max=3600))


def _name_list(value: Any) -> list[str]:
    """A list of model names, or one comma-separated string (how an env var carries it)."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise vol.Invalid("expected a list of model names or a comma-separated string")
    return list(value)


_NAME_LIST = _name_list


def _registry_sources(value: Any) -> dict[str, str]:
    """Zoo model → ``models:/…`` URI; a mapping, or ``name=uri,…`` (how an env var carries it)."""
    if isinstance(value, str):
        pairs = [part.strip().partition("=") for part in value.split(",") if part.strip()]
        if any(not sep for _name, sep, _uri in pairs):
            raise vol.Invalid("expected name=models:/<name>@<alias>, comma-separated")
        value = {name.strip(): uri.strip() for name, _sep, uri in pairs}
    if not isinstance(value, dict):
        raise vol.Invalid("expected a mapping of zoo model name to models:/ URI")
    for name, uri in value.items():
        if not isinstance(uri, str) or not uri.startswith("models:/"):
            raise vol.Invalid(f"{name}: expected a models:/<name>@<alias> URI, got {uri!r}")
    return {str(k): v for k, v in value.items()}


_DEVICE_SCHEMA = vol.Schema(
    {
        vol.Optional("budget_gb"): vol.All(vol.Coerce(float), vol.Range(min=0.0)),
        vol.Optional("services", default=list): [vol.In(SERVICES)],
    }
)
_DEVICE_KEYS = ("strict", "default_vram_budget_gb")
"""The ``devices:`` section's own keys; every other key there is a device id."""
_DEVICE_ENTRIES = vol.Schema({vol.Extra: _DEVICE_SCHEMA})


def _seconds(lo: float, hi: float) -> vol.All:
    return vol.All(vol.Coerce(float), vol.Range(min=lo, max=hi))


def _llm_url(value: Any) -> str | None:
    """None, or a URL the LLM client accepts (http/https with a host)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise vol.Invalid("expected a URL string")
    try:
        normalise_base_url(value)
    except ValueError as err:
        raise vol.Invalid(str(err)) from None
    return value


# Keys, types and ranges only: an absent key takes the default of ReasoningSettings, the one
# owner of the LLM's defaults (its client and supervisor read them from there too).
_LLM_SCHEMA = vol.Schema(
    {
        vol.Optional("mode"): vol.In([m.value for m in LLMMode]),
        vol.Optional("model_path"): vol.Any(None, vol.All(str, vol.Length(min=1))),
        vol.Optional("gpu_layers"): vol.All(vol.Coerce(int), vol.Range(min=-1)),
        vol.Optional("ctx_size"): vol.All(vol.Coerce(int), vol.Range(min=256, max=1_048_576)),
        vol.Optional("parallel"): vol.All(vol.Coerce(int), vol.Range(min=1, max=64)),
        vol.Optional("threads"): vol.Any(None, _POSITIVE_INT),
        vol.Optional("url"): _llm_url,
        vol.Optional("api_key"): vol.Any(None, vol.All(str, vol.Length(min=1))),
        vol.Optional("model"): str,
        vol.Optional("response_format"): vol.In(["auto", *(f.value for f in ResponseFormat)]),
        vol.Optional("timeout_s"): _seconds(0.1, 600),
        vol.Optional("connect_timeout_s"): _seconds(0.1, 60),
        vol.Optional("queue_timeout_s"): _seconds(0, 600),
        vol.Optional("max_tokens"): vol.All(vol.Coerce(int), vol.Range(min=16, max=8192)),
        vol.Optional("temperature"): vol.All(vol.Coerce(float), vol.Range(min=0.0, max=2.0)),
        vol.Optional("seed"): vol.All(vol.Coerce(int), vol.Range(min=0, max=2**31 - 1)),
        vol.Optional("repeat_penalty"): vol.Any(
            None, vol.All(vol.Coerce(float), vol.Range(min=0.5, max=2.0))
        ),
        vol.Optional("ready_timeout_s"): _seconds(1, 3600),
        vol.Optional("backoff_initial_s"): _seconds(0.01, 600),
        vol.Optional("backoff_max_s"): _seconds(0.01, 3600),
        vol.Optional("stop_timeout_s"): _seconds(0.1, 120),
        vol.Optional("probe_interval_s"): _seconds(0.05, 600),
        vol.Optional("probe_timeout_s"): _seconds(0.05, 600),
        vol.Optional("probe_misses"): vol.All(vol.Coerce(int), vol.Range(min=1, max=100)),
    }
)


def _rules_schema() -> vol.Schema:
    """``reasoning.rules``: one key per :class:`RuleConfig` field, typed by its default and
    bounded by the range in its metadata, so a new rule setting needs no edit here."""
    keys: dict[Any, Any] = {}
    for item in fields(RuleConfig):
        default = getattr(_RULE_DEFAULTS, item.name)
        lo, hi = item.metadata.get("range", (None, None))
        number = vol.Range(min=lo, max=hi)
        validator: Any
        if isinstance(default, Mapping):
            validator = {vol.All(str, vol.Length(min=1)): vol.All(vol.Coerce(int), number)}
        elif item.metadata.get("names"):  # zone / posture names
            validator = [vol.All(str, vol.Length(min=1))]
        elif isinstance(default, frozenset):
            validator = [vol.In(RULE_NAMES)]
        elif isinstance(default, int):
            validator = vol.All(vol.Coerce(int), number)
        else:
            validator = vol.All(vol.Coerce(float), number)
        keys[vol.Optional(item.name)] = validator
    return vol.Schema(keys)


_RULE_DEFAULTS = RuleConfig()

SCHEMA = vol.Schema(
    {
        vol.Optional("server", default=dict): {
            vol.Optional("host", default="127.0.0.1"): str,
            vol.Optional("port", default=8095): vol.All(
                vol.Coerce(int), vol.Range(min=1, max=65535)
            ),
            vol.Optional("api_token", default=None): vol.Any(None, vol.All(str, vol.Length(min=1))),
            vol.Optional("max_body_mb", default=20.0): vol.All(
                vol.Coerce(float), vol.Range(min=0.01, max=1024)
            ),
            vol.Optional("data_dir", default="data"): str,
            vol.Optional("log_level", default="INFO"): vol.All(
                vol.Upper, vol.In(["DEBUG", "INFO", "WARNING", "ERROR"])
            ),
            vol.Optional("keepalive_timeout_s", default=30.0): _SECONDS,
            vol.Optional("read_timeout_s", default=30.0): _SECONDS,
            vol.Optional("max_connections", default=256): vol.All(
                vol.Coerce(int), vol.Range(min=1, max=65535)
            ),
        },
        vol.Optional("devices", default=dict): vol.Schema(
            {
                vol.Optional("strict"): _BOOL,
                vol.Optional("default_vram_budget_gb"): vol.All(
                    vol.Coerce(float), vol.Range(min=0.0)
                ),
                vol.Extra: _DEVICE_SCHEMA,
            }
        ),
        vol.Optional("detector", default=dict): {
            vol.Optional("backend", default="auto"): vol.In(BACKENDS),
            vol.Optional("model_path", default=None): vol.Any(None, str),
            vol.Optional("cfg_path", default=None): vol.Any(None, str),
            vol.Optional("names_path", default=None): vol.Any(None, str),
            vol.Optional("confidence", default=0.5): _PROBABILITY,
            vol.Optional("class_thresholds", default=dict): {str: _PROBABILITY},
            vol.Optional("classes", default=list(SECURITY_CLASSES)): vol.All(
                [vol.All(str, vol.Length(min=1))], vol.Length(min=1)
            ),
            vol.Optional("input_size", default=416): vol.All(
                vol.Coerce(int), vol.Range(min=32, max=4096), _multiple_of_32
            ),
            vol.Optional("nms_iou", default=0.45): _PROBABILITY,
            vol.Optional("min_confidence", default=0.1): _PROBABILITY,
            vol.Optional("warmup", default=True): _BOOL,
            vol.Optional("gpu_path", default=dict): {
                vol.Optional("half", default=False): _BOOL,
                vol.Optional("pinned_memory", default=False): _BOOL,
                vol.Optional("cuda_streams", default=False): _BOOL,
                vol.Optional("cuda_streams_pool_size", default=2): vol.All(
                    vol.Coerce(int), vol.Range(min=1, max=16)
                ),
                vol.Optional("compile", default="off"): _compile_mode,
            },
        },
        # Keys, types and ranges only: an absent key takes TritonSettings' default.
        vol.Optional("triton", default=dict): {
            vol.Optional("enabled"): _BOOL,
            vol.Optional("url"): vol.All(str, vol.Length(min=1)),
            vol.Optional("http_url"): vol.All(str, vol.Length(min=1)),
            vol.Optional("protocol"): vol.All(vol.Lower, vol.In(TRITON_PROTOCOLS)),
            vol.Optional("model"): vol.All(str, vol.Length(min=1)),
            vol.Optional("timeout_s"): _seconds(0.05, 600),
            vol.Optional("max_retries"): vol.All(vol.Coerce(int), vol.Range(min=0, max=20)),
            vol.Optional("backoff_s"): _seconds(0.001, 60),
            vol.Optional("probe_interval_s"): _seconds(0.05, 600),
            vol.Optional("confidence_threshold"): vol.Any(None, _PROBABILITY),
        },
        # Keys, types and ranges only: an absent key takes RaySettings' default.
        vol.Optional("ray", default=dict): {
            vol.Optional("serve_url"): vol.Any(
                None,
                vol.All(str, vol.Match(r"^https?://[^/]")),
                msg="expected an http(s) URL, e.g. http://head:8000/vigil",
            ),
            vol.Optional("detector_timeout_s"): _seconds(0.05, 600),
            vol.Optional("zoo_timeout_s"): _seconds(0.05, 600),
            vol.Optional("detector_fallback"): vol.All(vol.Lower, vol.In(RAY_DETECTOR_FALLBACKS)),
            vol.Optional("retry_s"): _seconds(0.1, 3600),
        },
        vol.Optional("batching", default=dict): {
            vol.Optional("enabled", default=True): _BOOL,
            vol.Optional("autotune", default=True): _BOOL,
            vol.Optional("max_batch_size", default=8): vol.All(
                vol.Coerce(int), vol.Range(min=1, max=256)
            ),
            vol.Optional("max_queue_delay_us", default=5000): vol.All(
                vol.Coerce(int), vol.Range(min=0, max=10_000_000)
            ),
            vol.Optional("preferred_batch_sizes", default=list): [_POSITIVE_INT],
            vol.Optional("max_queue_size", default=64): vol.All(
                vol.Coerce(int), vol.Range(min=1, max=100_000)
            ),
        },
        vol.Optional("images", default=dict): {
            vol.Optional("max_pixels", default=40_000_000): vol.All(
                vol.Coerce(int), vol.Range(min=1)
            ),
        },
        vol.Optional("llm", default=dict): _LLM_SCHEMA,
        vol.Optional("reasoning", default=dict): {
            vol.Optional("weights", default=dict): {
                vol.Optional("rules"): vol.All(vol.Coerce(float), vol.Range(min=0)),
                vol.Optional("llm"): vol.All(vol.Coerce(float), vol.Range(min=0)),
                vol.Optional("max_llm_decrease"): vol.All(
                    vol.Coerce(int), vol.Range(min=0, max=100)
                ),
            },
            vol.Optional("rules", default=dict): _rules_schema(),
            vol.Optional("llm_policy"): vol.In([p.value for p in LLMPolicy]),
            vol.Optional("llm_margin"): vol.All(vol.Coerce(int), vol.Range(min=0, max=50)),
        },
        vol.Optional("analysis", default=dict): {
            vol.Optional("cameras", default=list): [vol.All(str, _camera_id)],
            vol.Optional("history_seconds", default=600): vol.All(
                vol.Coerce(float), vol.Range(min=0)
            ),
            vol.Optional("max_clock_skew_s", default=300): vol.All(
                vol.Coerce(float), vol.Range(min=0)
            ),
            vol.Optional("max_side", default=1920): vol.All(vol.Coerce(int), vol.Range(min=64)),
            vol.Optional("max_concurrent", default=2): _POSITIVE_INT,
            vol.Optional("max_waiting", default=8): vol.All(vol.Coerce(int), vol.Range(min=0)),
        },
        vol.Optional("tracing", default=dict): {
            vol.Optional("otlp_endpoint", default=None): vol.Any(
                None, vol.All(str, vol.Length(min=1))
            ),
            vol.Optional("service_name", default="vigil-addon"): vol.All(str, vol.Length(min=1)),
        },
        vol.Optional("store", default=dict): {
            vol.Optional("max_age_days", default=30): vol.All(
                vol.Coerce(float), vol.Range(min=0.001)
            ),
            vol.Optional("max_events", default=10_000): _POSITIVE_INT,
        },
        vol.Optional("zoo", default=dict): {
            vol.Optional("enabled", default=True): _BOOL,
            vol.Optional("preload", default=list): _NAME_LIST,
            vol.Optional("disabled_models", default=list): _NAME_LIST,
            vol.Optional("deadline_s", default=5.0): _SECONDS,
            vol.Optional("idle_ttl_s", default=None): vol.Any(
                None, vol.All(vol.Coerce(float), vol.Range(min=0))
            ),
            vol.Optional("margin_mb", default=256): vol.All(vol.Coerce(int), vol.Range(min=0)),
            vol.Optional("max_crops", default=8): _POSITIVE_INT,
            vol.Optional("sources", default=dict): _registry_sources,
        },
        vol.Optional("registry", default=dict): {
            vol.Optional("tracking_uri", default=None): vol.Any(
                None, vol.All(str, vol.Length(min=1))
            ),
            vol.Optional("cache_dir", default=None): vol.Any(None, vol.All(str, vol.Length(min=1))),
            vol.Optional("timeout_s", default=5.0): _SECONDS,
            vol.Optional("cache_keep", default=2): _POSITIVE_INT,
        },
        vol.Optional("reid", default=dict): {
            vol.Optional("enabled", default=True): _BOOL,
            vol.Optional("embedder", default="faceres"): vol.In(["faceres", "mobilefacenet"]),
            vol.Optional("models_dir", default="models"): str,
            vol.Optional("threshold", default=None): vol.Any(None, _PROBABILITY),
            vol.Optional("window_seconds", default=3600): vol.All(
                vol.Coerce(float), vol.Range(min=0)
            ),
        },
        vol.Optional("deploy", default=dict): {
            vol.Optional("override_dir", default=None): vol.Any(
                None, vol.All(str, vol.Length(min=1))
            ),
        },
        # Keys and types only: an absent key takes PrivacySettings' default.
        vol.Optional("privacy", default=dict): {
            vol.Optional("blur_unknown_faces"): _BOOL,
            vol.Optional("local_only"): _BOOL,
        },
    },
    extra=vol.PREVENT_EXTRA,
)

# Environment variable → path in the YAML document. Values are strings; the schema coerces them.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "HOST": ("server", "host"),
    "PORT": ("server", "port"),
    "VIGIL_API_TOKEN": ("server", "api_token"),
    "VIGIL_MAX_BODY_MB": ("server", "max_body_mb"),
    "VIGIL_DATA_DIR": ("server", "data_dir"),
    "LOG_LEVEL": ("server", "log_level"),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("tracing", "otlp_endpoint"),  # OpenTelemetry's own names
    "OTEL_SERVICE_NAME": ("tracing", "service_name"),
    "YOLO26_MODEL_PATH": ("detector", "model_path"),
    "YOLO26_CONFIDENCE": ("detector", "confidence"),
    "DETECTOR_BACKEND": ("detector", "backend"),
    "BACKEND": ("detector", "backend"),
    "RAY_SERVE_URL": ("ray", "serve_url"),
    "RAY_DETECTOR_TIMEOUT_S": ("ray", "detector_timeout_s"),
    "RAY_ZOO_TIMEOUT_S": ("ray", "zoo_timeout_s"),
    "RAY_DETECTOR_FALLBACK": ("ray", "detector_fallback"),
    "RAY_RETRY_S": ("ray", "retry_s"),
    "TRITON_ENABLED": ("triton", "enabled"),
    "TRITON_URL": ("triton", "url"),
    "TRITON_HTTP_URL": ("triton", "http_url"),
    "TRITON_PROTOCOL": ("triton", "protocol"),
    "TRITON_MODEL": ("triton", "model"),
    "TRITON_TIMEOUT": ("triton", "timeout_s"),
    "TRITON_MAX_RETRIES": ("triton", "max_retries"),
    "TRITON_CONFIDENCE_THRESHOLD": ("triton", "confidence_threshold"),
    "VRAM_BUDGET_GB": ("devices", "default_vram_budget_gb"),
    "DEVICES_STRICT": ("devices", "strict"),
    "MAX_BATCH_SIZE": ("batching", "max_batch_size"),
    "MAX_QUEUE_DELAY_US": ("batching", "max_queue_delay_us"),
    "BATCH_AUTOTUNE": ("batching", "autotune"),
    "LLM_MODE": ("llm", "mode"),
    "MODEL_PATH": ("llm", "model_path"),
    "GPU_LAYERS": ("llm", "gpu_layers"),
    "CTX_SIZE": ("llm", "ctx_size"),
    "PARALLEL": ("llm", "parallel"),
    "LLM_URL": ("llm", "url"),
    "LLM_API_KEY": ("llm", "api_key"),
    "LLM_MODEL": ("llm", "model"),
    "LLM_TIMEOUT_S": ("llm", "timeout_s"),
    "LLM_POLICY": ("reasoning", "llm_policy"),
    "VIGIL_MODELS_DIR": ("reid", "models_dir"),
    "ENRICHMENT_ENABLED": ("zoo", "enabled"),
    "ENRICHMENT_PRELOAD_MODELS": ("zoo", "preload"),
    "ENRICHMENT_DISABLED_MODELS": ("zoo", "disabled_models"),
    "ENRICHMENT_IDLE_TTL_S": ("zoo", "idle_ttl_s"),
    "ENRICHMENT_DEADLINE_S": ("zoo", "deadline_s"),
    "ZOO_MODEL_SOURCES": ("zoo", "sources"),
    "MLFLOW_TRACKING_URI": ("registry", "tracking_uri"),
    "VIGIL_REGISTRY_CACHE": ("registry", "cache_dir"),
    "VIGIL_REGISTRY_CACHE_KEEP": ("registry", "cache_keep"),
    "VIGIL_OVERRIDE_DIR": ("deploy", "override_dir"),
    "DETECTOR_HALF": ("detector", "gpu_path", "half"),
    "PINNED_MEMORY": ("detector", "gpu_path", "pinned_memory"),
    "CUDA_STREAMS_ENABLED": ("detector", "gpu_path", "cuda_streams"),
    "CUDA_STREAMS_POOL_SIZE": ("detector", "gpu_path", "cuda_streams_pool_size"),
    "TORCH_COMPILE": ("detector", "gpu_path", "compile"),
    "BLUR_UNKNOWN_FACES": ("privacy", "blur_unknown_faces"),
    "LOCAL_ONLY": ("privacy", "local_only"),
}


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str
    port: int
    api_token: str | None
    max_body_bytes: int
    data_dir: Path
    log_level: str
    keepalive_timeout_s: float
    """An idle connection is closed after this long (also one that never sends a request)."""
    read_timeout_s: float
    """A request (line, headers and body) must arrive within this long of its first byte."""
    max_connections: int
    """Open connections at most; beyond it the longest-idle one is closed to make room."""


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """What the user asked of one device; discovery decides whether it exists."""

    device_id: str
    budget_gb: float | None
    services: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DevicesSettings:
    strict: bool
    default_vram_budget_gb: float | None
    devices: tuple[DeviceSettings, ...]


@dataclass(frozen=True, slots=True)
class GpuPathSettings:
    """Optimisations of the torch/Ultralytics detector path, each off unless asked for.

    Each applies where it can (a ``.pt`` model; a CUDA device for all but ``compile``) and
    falls back to the plain path elsewhere, saying so once in the log.
    """

    half: bool = False
    """FP16 weights and inputs."""
    pinned_memory: bool = False
    """Batches stacked in page-locked host memory and copied to the GPU asynchronously."""
    cuda_streams: bool = False
    """A batch split over a pool of CUDA streams: one part's pre-processing on the CPU overlaps
    another's inference on the GPU, and post-processing overlaps the next part's inference."""
    cuda_streams_pool_size: int = 2
    compile: str = "off"
    """``torch.compile`` mode, or ``off``."""


@dataclass(frozen=True, slots=True)
class TritonSettings:
    """The ``triton`` section: a detector served by an NVIDIA Triton server (seed env names)."""

    enabled: bool = False
    """Use the Triton backend (``detector.backend: triton`` does the same)."""
    url: str = "localhost:8001"
    """gRPC endpoint (host:port)."""
    http_url: str = "localhost:8000"
    """HTTP endpoint (host:port), used when ``protocol`` is ``http``."""
    protocol: str = "grpc"
    model: str = "vigil_detector"
    timeout_s: float = 10.0
    """Per call to the server: an inference, a health probe, a statistics read."""
    max_retries: int = 3
    """Retries of a failed inference, with exponential backoff from ``backoff_s``."""
    backoff_s: float = 0.1
    probe_interval_s: float = 5.0
    """How often health, metadata and statistics are read in the background for /health."""
    confidence_threshold: float | None = None
    """The floor below which served boxes are dropped; None: ``detector.min_confidence``."""

    @property
    def endpoint(self) -> str:
        return self.url if self.protocol == "grpc" else self.http_url


@dataclass(frozen=True, slots=True)
class RaySettings:
    """The ``ray`` section: the model stages on a Ray Serve cluster (``BACKEND=ray``)."""

    serve_url: str | None = None
    """The Vigil application's HTTP root on the cluster, e.g. ``http://head:8000/vigil``."""
    detector_timeout_s: float = 10.0
    """How long one detection call may take before the detector falls back (see
    ``detector_fallback``)."""
    zoo_timeout_s: float = 5.0
    """How long the enrichments may take; past it the analysis answers without them
    (``degraded: true``, ``missing_stages: ["zoo"]``)."""
    detector_fallback: str = "local"
    """When the cluster's detector does not answer: ``local`` runs the add-on's embedded
    yolov3-tiny on the CPU (loaded on the first failure, then kept) and the analysis answers
    ``degraded: true`` with ``detector`` missing; ``none`` answers 503."""
    retry_s: float = 30.0
    """While a stage is known down, the cluster is asked again only this often; in between
    the detector goes straight to its fallback instead of waiting ``detector_timeout_s``."""


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    backend: str
    model_path: str | None
    cfg_path: str | None
    names_path: str | None
    confidence: float
    class_thresholds: Mapping[str, float]
    classes: tuple[str, ...]
    input_size: int
    nms_iou: float
    min_confidence: float
    warmup: bool
    gpu_path: GpuPathSettings = field(default_factory=GpuPathSettings)
    triton: TritonSettings = field(default_factory=TritonSettings)
    ray: RaySettings = field(default_factory=RaySettings)


@dataclass(frozen=True, slots=True)
class BatchingSettings:
    enabled: bool
    autotune: bool
    max_batch_size: int
    max_queue_delay_us: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_size: int


@dataclass(frozen=True, slots=True)
class ImageSettings:
    max_pixels: int


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    cameras: frozenset[str]
    history_seconds: float
    max_clock_skew_s: float
    max_side: int
    """Longer side (pixels) every stage works at; larger uploads are reduced on decoding."""
    max_concurrent: int
    """Analyses holding pixels at once (each costs up to a full-size decode of its image)."""
    max_waiting: int
    """Analyses that may wait for a slot; beyond that the API answers 429 ``busy``."""


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """OpenTelemetry traces: off (``None``) unless an OTLP gRPC collector is named."""

    otlp_endpoint: str | None = None
    service_name: str = "vigil-addon"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    path: Path
    max_age_days: float
    max_events: int


@dataclass(frozen=True, slots=True)
class ZooSettings:
    """The model zoo: which models, how long an enrichment waits for memory, idle unloads."""

    enabled: bool = True
    preload: tuple[str, ...] = ()
    disabled_models: frozenset[str] = frozenset()
    deadline_s: float = 5.0
    idle_ttl_s: float | None = None
    margin_bytes: int = 256 * 1024**2
    max_crops: int = 8
    sources: Mapping[str, str] = field(default_factory=dict)
    """Zoo model name → the ``models:/`` URI its weights come from (the MLflow registry)."""


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """The MLflow model registry that ``models:/`` weights paths are resolved from."""

    tracking_uri: str | None = None
    cache_dir: Path = Path("data/registry")
    """Verified copies, by name and version (default: ``<data_dir>/registry``)."""
    timeout_s: float = 5.0
    """How long the tracking server may take to answer before the cache is used."""
    cache_keep: int = 2
    """Newest versions kept in the cache per registered model, besides those in use."""


@dataclass(frozen=True, slots=True)
class ReidSettings:
    enabled: bool
    embedder: str
    models_dir: Path
    threshold: float | None
    window_seconds: float


@dataclass(frozen=True, slots=True)
class DeploySettings:
    override_dir: Path
    """Where the add-on writes the Compose GPU override, its reference and ``devices.yaml``
    (default: the data dir); on the GPU host, a folder the user's ``docker compose`` reads."""

    @property
    def devices_file(self) -> Path:
        return self.override_dir / DEVICES_FILE


@dataclass(frozen=True, slots=True)
class PrivacySettings:
    """What the add-on keeps and whom it talks to (issue 15 item 6); both off by default."""

    blur_unknown_faces: bool = False
    """Stored snapshots show enrolled people's faces only; every other face is blurred before
    the snapshot is encoded (the upload itself is never written anywhere)."""
    local_only: bool = False
    """The LLM may only be reached on loopback or the private LAN (see
    :mod:`addon_server.reasoning.locality`): checked here at load time and again on every
    connection, after name resolution."""


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings
    devices: DevicesSettings
    detector: DetectorSettings
    batching: BatchingSettings
    images: ImageSettings
    reasoning: ReasoningSettings
    """The ``llm`` and ``reasoning`` sections together: the reasoning stage's settings."""
    analysis: AnalysisSettings
    store: StoreSettings
    reid: ReidSettings
    deploy: DeploySettings
    zoo: ZooSettings = field(default_factory=ZooSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    source: str = field(default="defaults", compare=False)


def _format_path(path: list[Any]) -> str:
    return ".".join(str(part) for part in path) or "<root>"


def _apply_env(document: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, path in ENV_OVERRIDES.items():
        if name not in environ:
            continue
        node = document
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(path[:-1])}: expected a mapping to apply ${name}")
            node = child
        node[path[-1]] = environ[name]


def _check_zoo_names(zoo: Mapping[str, Any]) -> None:
    """Preloaded and disabled models must be registered (a typo would silently do nothing)."""
    from addon_server.zoo.registry import Registry  # the registry owns the names

    known = Registry().names()
    for key in ("preload", "disabled_models", "sources"):
        unknown = [name for name in zoo[key] if name not in known]
        if unknown:
            raise ConfigError(f"zoo.{key}: unknown model {unknown[0]!r}; known: {', '.join(known)}")


def _build(data: dict[str, Any], source: str) -> Settings:
    server = data["server"]
    devices = data["devices"]
    detector = data["detector"]
    batching = data["batching"]
    override_dir = Path(data["deploy"]["override_dir"] or server["data_dir"])
    device_entries = read_devices_file(override_dir / DEVICES_FILE)
    if device_entries is None:
        device_entries = device_entries_of(
            {k: v for k, v in devices.items() if k not in _DEVICE_KEYS}
        )
    preferred = tuple(sorted(set(batching["preferred_batch_sizes"])))
    for size in preferred:
        if size > batching["max_batch_size"]:
            raise ConfigError(
                f"batching.preferred_batch_sizes: {size} is larger than max_batch_size "
                f"{batching['max_batch_size']}"
            )
    try:
        reasoning = ReasoningSettings.from_config(data["llm"], data["reasoning"])
    except ValueError as err:  # cross-field checks; the message starts with the key path
        raise ConfigError(redact(str(err))) from None
    triton = TritonSettings(**data["triton"])
    if triton.enabled and detector["backend"] not in ("auto", "triton"):
        raise ConfigError(
            f"triton.enabled: conflicts with detector.backend {detector['backend']!r} "
            "(use 'auto' or 'triton')"
        )
    ray = RaySettings(**data["ray"])
    if detector["backend"] == "ray" and not ray.serve_url:
        raise ConfigError("ray.serve_url: required with backend 'ray' (env RAY_SERVE_URL)")
    if reasoning.mode is LLMMode.RAY:
        if not ray.serve_url:
            raise ConfigError("ray.serve_url: required with llm.mode 'ray' (env RAY_SERVE_URL)")
        if reasoning.url is not None:
            raise ConfigError("llm.url: not used with llm.mode 'ray' (the LLM is ray.serve_url's)")
        # The Serve application's ingress speaks OpenAI's chat API on its own root.
        reasoning = dataclasses.replace(reasoning, url=ray.serve_url)
    _check_zoo_names(data["zoo"])
    privacy = _privacy(data["privacy"], reasoning)
    reasoning = dataclasses.replace(reasoning, local_only=privacy.local_only)
    if detector["backend"] == "darknet" and detector["model_path"] and not detector["cfg_path"]:
        raise ConfigError("detector.cfg_path: required with backend 'darknet' and a model_path")
    return Settings(
        server=ServerSettings(
            host=server["host"],
            port=server["port"],
            api_token=server["api_token"],
            max_body_bytes=int(server["max_body_mb"] * 1024 * 1024),
            data_dir=Path(server["data_dir"]),
            log_level=server["log_level"],
            keepalive_timeout_s=server["keepalive_timeout_s"],
            read_timeout_s=server["read_timeout_s"],
            max_connections=server["max_connections"],
        ),
        devices=DevicesSettings(
            strict=bool(devices.get("strict", False)),
            default_vram_budget_gb=devices.get("default_vram_budget_gb"),
            devices=tuple(device_entries),
        ),
        detector=DetectorSettings(
            backend=detector["backend"],
            model_path=detector["model_path"],
            cfg_path=detector["cfg_path"],
            names_path=detector["names_path"],
            confidence=detector["confidence"],
            class_thresholds=dict(detector["class_thresholds"]),
            classes=tuple(detector["classes"]),
            input_size=detector["input_size"],
            nms_iou=detector["nms_iou"],
            min_confidence=detector["min_confidence"],
            warmup=detector["warmup"],
            gpu_path=GpuPathSettings(**detector["gpu_path"]),
            triton=triton,
            ray=ray,
        ),
        batching=BatchingSettings(
            enabled=batching["enabled"],
            autotune=batching["autotune"],
            max_batch_size=batching["max_batch_size"],
            max_queue_delay_us=batching["max_queue_delay_us"],
            preferred_batch_sizes=preferred,
            max_queue_size=batching["max_queue_size"],
        ),
        images=ImageSettings(max_pixels=data["images"]["max_pixels"]),
        reasoning=reasoning,
        analysis=AnalysisSettings(
            cameras=frozenset(data["analysis"]["cameras"]),
            history_seconds=data["analysis"]["history_seconds"],
            max_clock_skew_s=data["analysis"]["max_clock_skew_s"],
            max_side=data["analysis"]["max_side"],
            max_concurrent=data["analysis"]["max_concurrent"],
            max_waiting=data["analysis"]["max_waiting"],
        ),
        store=StoreSettings(
            path=Path(server["data_dir"]) / "vigil.db",
            max_age_days=data["store"]["max_age_days"],
            max_events=data["store"]["max_events"],
        ),
        reid=ReidSettings(
            enabled=data["reid"]["enabled"],
            embedder=data["reid"]["embedder"],
            models_dir=Path(data["reid"]["models_dir"]),
            threshold=data["reid"]["threshold"],
            window_seconds=data["reid"]["window_seconds"],
        ),
        deploy=DeploySettings(override_dir=override_dir),
        tracing=TracingSettings(**data["tracing"]),
        zoo=ZooSettings(
            enabled=data["zoo"]["enabled"],
            preload=tuple(data["zoo"]["preload"]),
            disabled_models=frozenset(data["zoo"]["disabled_models"]),
            deadline_s=data["zoo"]["deadline_s"],
            idle_ttl_s=data["zoo"]["idle_ttl_s"],
            margin_bytes=data["zoo"]["margin_mb"] * 1024**2,
            max_crops=data["zoo"]["max_crops"],
            sources=dict(data["zoo"]["sources"]),
        ),
        registry=RegistrySettings(
            tracking_uri=data["registry"]["tracking_uri"],
            cache_dir=Path(data["registry"]["cache_dir"] or Path(server["data_dir"]) / "registry"),
            timeout_s=data["registry"]["timeout_s"],
            cache_keep=data["registry"]["cache_keep"],
        ),
        privacy=privacy,
        source=source,
    )


def _privacy(data: Mapping[str, Any], reasoning: ReasoningSettings) -> PrivacySettings:
    """The ``privacy`` section; with ``local_only``, the URL of an LLM the add-on does not run
    (``llm.url``, or ``ray.serve_url`` with ``llm.mode: ray``) must be local.

    An address that is surely outside the LAN (a public literal, or a name that resolves to
    one) stops the start here; a name that does not resolve yet (mDNS may still be starting)
    is let through and refused at every connection until it resolves to a local address.
    """
    privacy = PrivacySettings(**data)
    if privacy.local_only and reasoning.mode.remote and reasoning.url:
        key = "ray.serve_url" if reasoning.mode is LLMMode.RAY else "llm.url"  # its LLM's URL
        try:
            check_url(reasoning.url, resolve=resolve_blocking)
        except UnresolvedHostError:
            pass
        except NotLocalError as err:
            raise ConfigError(f"privacy.local_only: {key} {err.strerror}") from None
    return privacy


def parse(
    document: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None = None,
    source: str = "defaults",
) -> Settings:
    """Validate a configuration document (after env overrides) into :class:`Settings`."""
    raw: dict[str, Any] = _deep_copy(document or {})
    _apply_env(raw, os.environ if environ is None else environ)
    try:
        data = SCHEMA(raw)
    except vol.MultipleInvalid as err:
        raise _config_error(err, raw) from None
    return _build(data, source)


def _config_error(err: vol.MultipleInvalid, raw: Any, prefix: str = "") -> ConfigError:
    """The first problem of ``raw``, as ``key.path: reason (got value)``."""
    first = err.errors[0]
    found = _lookup(raw, first.path)
    # redact(): a rejected LLM_URL may carry a password, and this line goes to the log.
    shown = "" if found is _MISSING else f" (got {redact(repr(found))})"
    path = _format_path([*([prefix] if prefix else []), *first.path])
    return ConfigError(f"{path}: {first.msg}{shown}")


def device_entries_of(document: Any, where: str = "devices") -> tuple[DeviceSettings, ...]:
    """Per-device entries (``cuda:N``/``cpu`` → ``budget_gb``, ``services``) by the rules of
    the ``devices:`` section: the config, ``devices.yaml`` and the API's new assignments all
    pass here. Raises :class:`ConfigError` naming the key (``devices.cuda:0.budget_gb: ...``).
    """
    if not isinstance(document, Mapping):
        raise ConfigError(f"{where}: expected a mapping of device ids (cpu, cuda:N)")
    raw = _deep_copy(document)
    for key in raw:
        if key in _DEVICE_KEYS:
            raise ConfigError(f"{where}.{key}: not a device id (expected 'cpu' or 'cuda:N')")
    try:
        data = _DEVICE_ENTRIES(raw)
    except vol.MultipleInvalid as err:
        raise _config_error(err, raw, where) from None
    entries: list[DeviceSettings] = []
    for key, value in data.items():
        try:
            device_id = _device_id(key)
        except vol.Invalid as err:
            raise ConfigError(f"{where}.{key}: {err.msg}") from None
        entries.append(DeviceSettings(device_id, value.get("budget_gb"), tuple(value["services"])))
    claimed: dict[str, str] = {}
    for entry in entries:
        for service in entry.services:
            if service in claimed:
                raise ConfigError(
                    f"{where}.{entry.device_id}.services: {service!r} is already placed on "
                    f"{claimed[service]}"
                )
            claimed[service] = entry.device_id
    return tuple(entries)


def device_entries_document(entries: tuple[DeviceSettings, ...]) -> dict[str, dict[str, Any]]:
    """The inverse of :func:`device_entries_of`: entries as the ``devices:`` section writes
    them (an unset budget is left out, as in the config)."""
    document: dict[str, dict[str, Any]] = {}
    for entry in entries:
        item: dict[str, Any] = {} if entry.budget_gb is None else {"budget_gb": entry.budget_gb}
        document[entry.device_id] = item | {"services": list(entry.services)}
    return document


def read_devices_file(path: Path) -> tuple[DeviceSettings, ...] | None:
    """The entries of a ``devices.yaml`` (``{"devices": {...}}``), or None when it is absent."""
    if not path.is_file():
        return None
    document = _yaml_file(path, "devices file")
    if not isinstance(document, dict) or set(document) != {"devices"}:
        raise ConfigError(f"{path}: expected one top-level key, 'devices'")
    try:
        return device_entries_of(document["devices"])
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _yaml_file(path: Path, what: str) -> Any:
    """The YAML document in ``path`` (an empty file is ``{}``); ConfigError naming it if not."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read {what} ({err.strerror})") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None


def load(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load ``path`` (or the default file when present) and apply environment overrides."""
    chosen = path
    if chosen is None and DEFAULT_CONFIG_PATH.is_file():
        chosen = DEFAULT_CONFIG_PATH
    document: Any = {}
    if chosen is not None:
        document = _yaml_file(chosen, "config file")
        if not isinstance(document, dict):
            raise ConfigError(f"{chosen}: the top level must be a mapping")
    return parse(document, environ, source=str(chosen) if chosen else "defaults")


_MISSING = object()


def _lookup(document: Any, path: list[Any]) -> Any:
    node = document
    for part in path:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            node = node[part]
        else:
            return _MISSING
    return node


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
