"""The Ray Serve application's arguments: which host runs which stage, GPU shares, budgets.

Pure data and validation (no Ray import), so the add-on, the YAML tests and the builder in
:mod:`addon_server.ray_serve.app` read one schema. ``deploy/ray/vigil.yaml`` passes these as
the application's ``args``; the builder turns them into each deployment's
``ray_actor_options``.

Placement is by per-host custom resources: a GPU host is started with
``ray start --resources='{"vigil_host_a": 1}'`` and a stage placed there asks for a sliver of
that resource, so Ray can only schedule it on that host, and when the host is gone the replica
waits for it rather than moving to a host that lacks the stage's GPU.

GPU shares are whole fractions 1/n only: Ray does not enforce GPU memory, so a share is a
promise between co-tenants, and 1/n shares tile a GPU exactly (0.3 + 0.3 + 0.3 would leave a
tenth nobody can use, 0.4 + 0.4 would strand 0.2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import voluptuous as vol

from addon_server.config import ConfigError, RegistrySettings, ZooSettings
from addon_server.config import parse as parse_config
from addon_server.zoo.manager import ESTIMATE_MARGIN, MEASURED_MARGIN
from addon_server.zoo.registry import ModelSpec

STAGES = ("detector", "zoo", "llm")
"""The stages the application serves (the ingress runs on the head, unplaced)."""
DEPLOYMENTS = ("ingress", *STAGES)
HOST_SLIVER = 0.001
"""How much of its host's resource a replica asks for: any amount pins it to the host, and a
tiny one lets many replicas share the host."""
MB = 1024**2


class PlacementError(ValueError):
    """The application's arguments are not a placement Ray can honour."""


def gpu_share(value: Any) -> float:
    """Validate a GPU share: 0 (CPU) or exactly 1/n for a whole n ≥ 1."""
    try:
        share = float(value)
    except (TypeError, ValueError):
        raise vol.Invalid(f"a GPU share must be a number, got {value!r}") from None
    if share == 0:
        return 0.0
    if share < 0 or share > 1:
        raise vol.Invalid(f"a GPU share must be between 0 and 1, got {share}")
    n = round(1 / share)
    if not math.isclose(share, 1 / n, rel_tol=1e-9):
        closest = Fraction(1, n)
        raise vol.Invalid(
            f"a GPU share must be 1/n (1, 0.5, 0.25, ...), got {share}; the closest is {closest}"
        )
    return 1 / n


_TIMEOUT = vol.All(vol.Coerce(float), vol.Range(min=0.05, max=600))
_COUNT = vol.All(vol.Coerce(int), vol.Range(min=1, max=10_000))

ARGS_SCHEMA = vol.Schema(
    {
        vol.Optional("hosts", default=dict): {vol.In(STAGES): vol.Any(None, str)},
        vol.Optional("gpu", default=dict): {vol.In(STAGES): gpu_share},
        vol.Optional("replicas", default=dict): {vol.In(STAGES): _COUNT},
        vol.Optional("timeouts", default=dict): {vol.In(STAGES): _TIMEOUT},
        vol.Optional("max_ongoing_requests", default=dict): {vol.In(DEPLOYMENTS): _COUNT},
        vol.Optional("max_queued_requests", default=dict): {
            vol.In(DEPLOYMENTS): vol.All(vol.Coerce(int), vol.Range(min=-1))
        },
        vol.Optional("batch", default=dict): {
            vol.Optional("max_batch_size", default=8): vol.All(
                vol.Coerce(int), vol.Range(min=1, max=256)
            ),
            vol.Optional("wait_timeout_s", default=0.01): vol.All(
                vol.Coerce(float), vol.Range(min=0, max=10)
            ),
        },
        vol.Optional("detector", default=dict): dict,
        vol.Optional("zoo", default=dict): dict,
        vol.Optional("registry", default=dict): dict,
        vol.Optional("zoo_models", default=None): vol.Any(None, [str]),
        vol.Optional("zoo_budget_mb", default=2048): vol.All(vol.Coerce(int), vol.Range(min=1)),
        vol.Optional("models_dir", default="models"): str,
        vol.Optional("llm_url", default=None): vol.Any(None, vol.All(str, vol.Length(min=1))),
        vol.Optional("llm_model_path", default=None): vol.Any(
            None, vol.All(str, vol.Length(min=1))
        ),
        vol.Optional("max_side", default=1920): vol.All(vol.Coerce(int), vol.Range(min=64)),
        vol.Optional("max_pixels", default=40_000_000): vol.All(vol.Coerce(int), vol.Range(min=1)),
    },
    extra=vol.PREVENT_EXTRA,
)

DEFAULT_TIMEOUTS = {"detector": 5.0, "zoo": 5.0, "llm": 30.0}


@dataclass(frozen=True, slots=True)
class AppArgs:
    """The validated ``args`` of the Vigil Serve application."""

    hosts: Mapping[str, str | None] = field(default_factory=dict)
    gpu: Mapping[str, float] = field(default_factory=dict)
    replicas: Mapping[str, int] = field(default_factory=dict)
    timeouts: Mapping[str, float] = field(default_factory=dict)
    max_ongoing_requests: Mapping[str, int] = field(default_factory=dict)
    max_queued_requests: Mapping[str, int] = field(default_factory=dict)
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.01
    detector: Mapping[str, Any] = field(default_factory=dict)
    """The add-on's ``detector:`` section, validated by config.py's schema in the replica."""
    zoo: Mapping[str, Any] = field(default_factory=dict)
    """The add-on's ``zoo:`` section (its ``sources`` name ``models:/`` weights)."""
    registry: Mapping[str, Any] = field(default_factory=dict)
    """The add-on's ``registry:`` section: the MLflow server ``models:/`` sources resolve on.
    Its credentials (S3 keys, ``MLFLOW_S3_ENDPOINT_URL``) are the replicas' environment."""
    zoo_models: tuple[str, ...] | None = None
    zoo_budget_bytes: int = 2048 * MB
    models_dir: str = "models"
    llm_url: str | None = None
    llm_model_path: str | None = None
    """A GGUF the LLM replica runs under the add-on's llama.cpp supervisor (``embedded``: the
    bundled SmolLM2); None with ``llm_url`` set: a pass-through."""
    max_side: int = 1920
    max_pixels: int = 40_000_000

    def timeout(self, stage: str) -> float:
        return self.timeouts.get(stage, DEFAULT_TIMEOUTS[stage])

    def actor_options(self, stage: str) -> dict[str, Any]:
        """``ray_actor_options`` for ``stage``: its GPU share and its host's resource."""
        options: dict[str, Any] = {"num_gpus": self.gpu.get(stage, 0.0)}
        host = self.hosts.get(stage)
        if host:
            options["resources"] = {host: HOST_SLIVER}
        return options

    def deployment_options(self, stage: str) -> dict[str, Any]:
        """Everything ``Deployment.options`` takes for ``stage`` (or the ingress) beyond its
        arguments; a full queue answers 429 with Retry-After, as the add-on does."""
        options: dict[str, Any] = {}
        if stage == "ingress":
            options["backpressure_config"] = {"status_code": 429, "retry_after_s": 1}
        else:
            options["ray_actor_options"] = self.actor_options(stage)
            options["num_replicas"] = self.replicas.get(stage, 1)
        if stage in self.max_ongoing_requests:
            options["max_ongoing_requests"] = self.max_ongoing_requests[stage]
        if stage in self.max_queued_requests:
            options["max_queued_requests"] = self.max_queued_requests[stage]
        return options


def parse_args(raw: Mapping[str, Any] | None) -> AppArgs:
    """Validate the application's ``args``; :class:`PlacementError` names the bad key."""
    try:
        data = ARGS_SCHEMA(dict(raw or {}))
        if data["llm_url"] and data["llm_model_path"]:
            raise vol.MultipleInvalid(
                [vol.Invalid("give llm_url or llm_model_path, not both", path=["llm_url"])]
            )
    except vol.MultipleInvalid as err:
        first = err.errors[0]
        path = ".".join(str(p) for p in first.path) or "<args>"
        raise PlacementError(f"{path}: {first.msg}") from None
    try:
        zoo_settings(data["zoo"], data["registry"])
    except ConfigError as err:
        raise PlacementError(str(err)) from None
    return AppArgs(
        hosts=data["hosts"],
        gpu=data["gpu"],
        replicas=data["replicas"],
        timeouts=data["timeouts"],
        max_ongoing_requests=data["max_ongoing_requests"],
        max_queued_requests=data["max_queued_requests"],
        max_batch_size=data["batch"]["max_batch_size"],
        batch_wait_timeout_s=data["batch"]["wait_timeout_s"],
        detector=data["detector"],
        zoo=data["zoo"],
        registry=data["registry"],
        zoo_models=None if data["zoo_models"] is None else tuple(data["zoo_models"]),
        zoo_budget_bytes=data["zoo_budget_mb"] * MB,
        models_dir=data["models_dir"],
        llm_url=data["llm_url"],
        llm_model_path=data["llm_model_path"],
        max_side=data["max_side"],
        max_pixels=data["max_pixels"],
    )


def zoo_settings(
    zoo: Mapping[str, Any], registry: Mapping[str, Any]
) -> tuple[ZooSettings, RegistrySettings]:
    """The ``zoo`` and ``registry`` arguments read by the add-on's own config schema (no
    environment: a replica's settings are its arguments), so a bad key fails at deploy time
    with the add-on's message, and the Zoo replicas get the same defaults as the add-on."""
    settings = parse_config({"zoo": dict(zoo), "registry": dict(registry)}, environ={})
    return settings.zoo, settings.registry


def models_per_replica(budget_bytes: int, specs: Iterable[ModelSpec]) -> int:
    """How many zoo models one Zoo replica keeps loaded (``max_num_models_per_replica``).

    The number of the largest served models that fit the byte budget *as the zoo manager
    admits them* — each at its estimate or measurement plus the load margin
    (``ESTIMATE_MARGIN``/``MEASURED_MARGIN``) — at least one. Any set of that many models then
    passes the manager's admission, so Ray's LRU eviction keeps the replica inside its budget;
    counting the bare estimate let Serve route a model to a replica whose zoo then refused it
    for room. The manager still checks the measured figures (and the runtimes' own bytes,
    unknown before the first load), as on one host.
    """
    largest = max((s.estimated_bytes for s in specs), default=0)
    if largest <= 0:
        return 1
    admitted = largest * max(ESTIMATE_MARGIN, MEASURED_MARGIN)
    return max(1, int(budget_bytes // admitted))
