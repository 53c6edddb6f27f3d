"""The reasoning stage's settings, and the one place their defaults live.

``config.py`` validates the ``llm:`` and ``reasoning:`` sections (every key, type and range)
and builds a :class:`ReasoningSettings` from them; a key the user leaves out takes the default
written here. The HTTP client (:class:`~addon_server.reasoning.llm.LLMClientConfig`) and the
supervisor (:class:`~addon_server.reasoning.supervisor.SupervisorConfig`) read their defaults
from :data:`DEFAULTS` too, so "how long may the LLM take" has one answer in the whole add-on.

Cross-field checks that a per-key schema cannot express (an external server needs a URL, the
backoff ceiling is not below its start, the blend weights are not both zero) raise
``ValueError`` here with the config key path first; ``config.py`` turns that into the one-line
configuration error, so ``check-config`` refuses exactly what ``serve`` would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .endpoint import normalise_base_url
from .gate import DEFAULT_MARGIN, LLMPolicy
from .risk import BlendWeights
from .rules import RuleConfig

__all__ = ["DEFAULTS", "LLMMode", "ReasoningSettings", "ResponseFormat"]


class LLMMode(StrEnum):
    """Where the LLM runs."""

    SUPERVISED = "supervised"
    EXTERNAL = "external"
    RAY = "ray"
    """The Vigil Serve application's LLM stage (``ray.serve_url``; its ingress speaks OpenAI's
    chat API): a failed call names the ``llm`` stage missing in the event and in /health."""
    DISABLED = "disabled"

    @property
    def remote(self) -> bool:
        """The add-on calls an LLM server it does not run: ``external``'s or the Ray stage."""
        return self in (LLMMode.EXTERNAL, LLMMode.RAY)


class ResponseFormat(StrEnum):
    """How the answer schema is sent.

    * ``json_object``: ``{"type": "json_object", "schema": …}``, the form llama-cpp-python's
      server turns into a grammar (its ``json_schema`` type is not implemented and answers
      HTTP 500);
    * ``json_schema``: the OpenAI structured-output form, expected by llama.cpp's
      llama-server, Ollama, vLLM and NIM;
    * ``none``: no ``response_format`` at all, for a server that supports neither (the prompt
      still asks for JSON and the answer is still validated).
    """

    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"
    NONE = "none"


@dataclass(frozen=True, kw_only=True)
class ReasoningSettings:
    """Everything the reasoning stage is configured with; the defaults are the add-on's.

    ``response_format`` ``auto`` picks ``json_object`` (+schema) for the supervised
    llama-cpp-python server and ``json_schema`` for an external server (llama-server, Ollama,
    vLLM, NIM), which is what each family implements.

    ``temperature`` 0 and a fixed ``seed`` make the model deterministic: one image gives one
    level. At 0.2 the same photo came out ``critical`` or ``high`` from call to call.

    The liveness probe (``probe_*``) is what notices a frozen server: a process that is
    stopped or wedged still holds its port, and the kernel still accepts connections on it, so
    only an HTTP answer within ``probe_timeout_s`` counts; ``probe_misses`` misses in a row
    and the server is killed and started again.
    """

    mode: LLMMode = LLMMode.SUPERVISED
    # supervised (seeds: MODEL_PATH, GPU_LAYERS, CTX_SIZE, PARALLEL)
    model_path: Path | None = None
    gpu_layers: int = -1
    ctx_size: int = 2048
    parallel: int = 1
    threads: int | None = None
    # external (seeds: LLM_URL, LLM_API_KEY); secrets stay out of repr() and so out of logs
    url: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    model: str = ""
    # requests
    response_format: str = "auto"
    timeout_s: float = 20.0
    connect_timeout_s: float = 3.0
    queue_timeout_s: float = 2.0
    max_tokens: int = 384
    temperature: float = 0.0
    seed: int | None = 42
    repeat_penalty: float | None = None  # None: 1.3 when supervised, not sent to external
    # supervision
    ready_timeout_s: float = 180.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    stop_timeout_s: float = 10.0
    probe_interval_s: float = 2.0
    probe_timeout_s: float = 2.0
    probe_misses: int = 3
    local_only: bool = False
    """``privacy.local_only`` (config.py sets it from there): the LLM client connects only to
    loopback / private-LAN addresses."""
    # When the LLM is asked (:mod:`.gate`; seed-style env LLM_POLICY). Never by default: issue
    # 15's rule is that the LLM is on by default only if it lowers both false alarms and misses
    # on benchmarks/risk_eval.py, and the embedded SmolLM2 adds misses there (12.5 % vs 0 %).
    llm_policy: LLMPolicy = LLMPolicy.NEVER
    llm_margin: int = DEFAULT_MARGIN
    # scoring
    weights: BlendWeights = field(default_factory=BlendWeights)
    rules: RuleConfig = field(default_factory=RuleConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", LLMMode(self.mode))
        object.__setattr__(self, "llm_policy", LLMPolicy(self.llm_policy))
        if self.mode is LLMMode.EXTERNAL and not self.url:
            raise ValueError("llm.url: required when llm.mode is 'external' (set LLM_URL)")
        if self.url is not None:
            try:
                normalise_base_url(self.url)
            except ValueError as exc:
                raise ValueError(f"llm.url: {exc}") from None
        if self.response_format != "auto":
            try:
                ResponseFormat(self.response_format)
            except ValueError:
                raise ValueError(
                    f"llm.response_format: unknown form {self.response_format!r}"
                ) from None
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"llm.backoff_max_s: {self.backoff_max_s:g} is below backoff_initial_s "
                f"{self.backoff_initial_s:g}"
            )

    @classmethod
    def from_config(
        cls, llm: Mapping[str, Any], reasoning: Mapping[str, Any] | None = None
    ) -> ReasoningSettings:
        """From the validated ``llm:`` and ``reasoning:`` sections; absent keys (or null)
        take the defaults above. Raises ``ValueError`` (key path first) for cross-field
        problems only, which ``config.py`` checks at load time."""
        values = {k: v for k, v in llm.items() if v is not None}
        if "model_path" in values:
            values["model_path"] = Path(values["model_path"])
        reasoning = reasoning or {}
        try:
            weights = BlendWeights.from_mapping(reasoning.get("weights") or {})
        except ValueError as exc:
            raise ValueError(f"reasoning.weights: {exc}") from None
        try:
            rules = RuleConfig.from_mapping(reasoning.get("rules") or {})
        except ValueError as exc:
            raise ValueError(f"reasoning.rules: {exc}") from None
        gate = {
            k: reasoning[k] for k in ("llm_policy", "llm_margin") if reasoning.get(k) is not None
        }
        return cls(**values, **gate, weights=weights, rules=rules)

    def resolved_repeat_penalty(self) -> float | None:
        """1.3 for the supervised llama.cpp server (curbs a small model's loops); for an
        external server only what the user set, since not every server knows the field."""
        if self.repeat_penalty is not None:
            return self.repeat_penalty
        return 1.3 if self.mode is LLMMode.SUPERVISED else None

    def resolved_response_format(self) -> ResponseFormat:
        """The concrete form for this mode (see the class doc)."""
        if self.response_format != "auto":
            return ResponseFormat(self.response_format)
        if self.mode in (LLMMode.SUPERVISED, LLMMode.RAY):
            # RAY: the Serve application's LLM replica supervises the same llama-cpp-python
            # server by default (set response_format when its llm_url is another server).
            return ResponseFormat.JSON_OBJECT
        return ResponseFormat.JSON_SCHEMA


DEFAULTS = ReasoningSettings()
"""The defaults, for the client and the supervisor to read instead of restating them."""
