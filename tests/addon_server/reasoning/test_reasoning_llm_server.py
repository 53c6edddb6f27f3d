"""The real thing: SmolLM2-135M through llama-cpp-python's server, supervised by us.

One supervised server is shared by the module (loading takes a second or two; generation a few
seconds per answer on two cores), with a small context and bounded answers. Nothing here mocks
llama.cpp: the server is killed with SIGKILL for real and comes back for real.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
import pytest_asyncio

from addon_server.reasoning.context import HistoryPoint, PersonSighting, Posture, Sighting, Threat
from addon_server.reasoning.grounding import check_answer
from addon_server.reasoning.llm import (
    ANSWER_SCHEMA,
    ResponseFormat,
    parse_answer,
)
from addon_server.reasoning.reasoner import (
    LLMMode,
    Reasoner,
    ReasoningSettings,
    embedded_model_path,
)
from addon_server.reasoning.risk import LLMStatus, SummarySource, level_for
from addon_server.reasoning.supervisor import (
    ServerState,
    SupervisedServer,
    SupervisorConfig,
)
from tests.addon_server.conftest import (
    LLM_HANG_GUARDS,
    LLM_HANG_TIMEOUT_S,
    eventually,
    llama_server,
    wait_serving,
)

from .reasoning_scenes import DAY, NIGHT, scene

# A whole test's hang guard, above the bounds inside it (up to four answers of the LLM).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(6 * LLM_HANG_TIMEOUT_S)]
# The async tests share the module's event loop with the module-scoped server fixture.
module_loop = pytest.mark.asyncio(loop_scope="module")

# Small and bounded so the module stays around a minute on two cores. Sampling (temperature,
# seed) is left at the add-on's defaults: they are what makes one scene give one level. The
# timeouts are hang guards: a busy machine makes answers slow, never fallbacks.
BASE = ReasoningSettings(
    ctx_size=1024,
    threads=2,
    max_tokens=320,
    backoff_initial_s=0.2,
    backoff_max_s=2.0,
    stop_timeout_s=5.0,
    **LLM_HANG_GUARDS,
)

SCENARIOS = {
    "gun_at_night": scene(
        "person",
        at=NIGHT,
        enrichments={"weapon": [Threat(model="weapon", confidence=0.95, label="gun")]},
    ),
    "pets_only_day": scene("dog", "cat", at=DAY),
    "unknown_loitering_night": scene(
        "person",
        at=NIGHT,
        camera="back_yard",
        persons=[PersonSighting(None, 0.3, (Sighting("front_door", 300),))],
        history=[HistoryPoint(s, 1) for s in (60, 120, 180, 240)],
    ),
    "resident_day": scene("person", "car", persons=[PersonSighting("alice", 0.88)]),
    "fallen_person": scene(
        "person",
        enrichments={"pose": [Posture(model="pose", confidence=0.9, posture="fallen")]},
    ),
    "empty": scene(),
}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reasoner() -> AsyncIterator[Reasoner]:
    r = Reasoner(BASE)
    await r.start()
    assert await r.wait_ready(LLM_HANG_TIMEOUT_S), r.status()
    yield r
    await r.stop()


def test_embedded_model_is_found_in_the_installed_package() -> None:
    path = embedded_model_path()
    assert path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000
    assert "site-packages" in str(path)


@pytest.mark.parametrize("name", list(SCENARIOS))
@module_loop
async def test_real_model_answers_schema_valid_json(reasoner: Reasoner, name: str) -> None:
    a = await reasoner.assess(SCENARIOS[name])
    assert a.llm_status is LLMStatus.OK, a.llm_error
    assert a.llm_score is not None
    assert a.risk_level is level_for(a.risk_score)
    assert a.risk_score >= a.rule_score - reasoner.settings.weights.max_llm_decrease
    # The raw text is the grammar-constrained JSON. llama-cpp-python's grammar can't enforce
    # integer bounds (checked after clamping, by parse_answer) and its string rule admits raw
    # control characters (hence strict=False, as in parse_answer); everything else is raw.
    raw = json.loads(a.llm_raw or "", strict=False)
    relaxed = json.loads(json.dumps(ANSWER_SCHEMA))
    relaxed["properties"]["risk_score"].pop("minimum")
    relaxed["properties"]["risk_score"].pop("maximum")
    relaxed["properties"]["factors"]["items"]["properties"]["points"] = {"type": "integer"}
    jsonschema.validate(raw, relaxed)
    assert a.summary
    assert a.factors or a.rule_score == a.risk_score == 0
    # The model's words are shown only when they pass the grounding checks; else the rules'.
    if a.summary_source is SummarySource.LLM:
        assert check_answer(parse_answer(a.llm_raw), SCENARIOS[name]) is None
    else:
        assert a.summary_rejected


@module_loop
async def test_same_scene_twice_gives_one_verdict(reasoner: Reasoner) -> None:
    """Temperature 0 and a fixed seed by default: the same photo used to come out
    ``critical`` one call and ``high`` the next (temperature 0.2, no seed).

    The server's prompt cache makes the previous request part of the arithmetic (llama.cpp
    evaluates only what differs from it, in a batch of another shape, so the model's free
    text can differ in later words); scores and levels held across every order of the six
    scenes tried. Each pair here follows a different request.
    """
    ctx = SCENARIOS["unknown_loitering_night"]
    other = await reasoner.assess(SCENARIOS["pets_only_day"])
    first = await reasoner.assess(ctx)
    other_again = await reasoner.assess(SCENARIOS["pets_only_day"])
    second = await reasoner.assess(ctx)
    for a, b in ((first, second), (other, other_again)):
        assert a.llm_status is b.llm_status is LLMStatus.OK, (a.llm_error, b.llm_error)
        assert (a.risk_level, a.risk_score) == (b.risk_level, b.risk_score)
        assert a.llm_score == b.llm_score
    assert (first.summary, first.summary_source) == (second.summary, second.summary_source)


@module_loop
async def test_health_of_supervised_server(reasoner: Reasoner) -> None:
    h = await reasoner.health()
    assert h["mode"] == "supervised"
    assert h["state"] == "ready"
    assert h["device"] == "cpu"
    assert h["response_format"] == "json_object"
    assert h["load_seconds"] > 0
    assert reasoner.issues() == []


@module_loop
async def test_killed_mid_request_falls_back_then_recovers(
    reasoner: Reasoner, llm_requests: list[object]
) -> None:
    sup = reasoner.server
    assert isinstance(sup, SupervisedServer)
    pid, restarts = sup.pid, sup.restarts
    assert pid is not None
    ctx = SCENARIOS["unknown_loitering_night"]

    in_flight = asyncio.create_task(reasoner.assess(ctx))
    await eventually(lambda: len(llm_requests) == 1, "the completion is requested")
    os.kill(pid, signal.SIGKILL)
    a = await in_flight  # bounded by the client's own timeout; a timeout fails below
    assert a.llm_status is LLMStatus.FALLBACK
    # Cut off in flight (refused or reset), not by the timeout nor the not-ready shortcut.
    assert (a.llm_error or "").startswith("connection: "), a.llm_error
    assert a.risk_score == a.rule_score
    assert a.risk_level is level_for(a.risk_score)

    # While it restarts, events fall back at once instead of waiting for the model load: the
    # LLM is not even asked. The supervisor counts the restart when it leaves READY; it is
    # READY again only after a backoff timer far later than this 10 ms poll's, so the poll
    # always sees RESTARTING, and assess() checks the state before its first await.
    await eventually(lambda: sup.restarts > restarts, "the supervisor sees its child die")
    assert sup.state is ServerState.RESTARTING
    b = await reasoner.assess(ctx)
    assert b.llm_status is LLMStatus.FALLBACK
    assert b.llm_error == "LLM server restarting"
    assert len(llm_requests) == 1
    assert [i["code"] for i in reasoner.issues()] == ["llm_unavailable"]

    assert await sup.wait_ready(LLM_HANG_TIMEOUT_S), sup.status()
    status = sup.status()
    assert status.restarts == restarts + 1
    assert status.pid not in (None, pid)
    assert status.restart_to_ready_seconds is not None
    assert status.restart_to_ready_seconds > 0
    assert "-9" in (status.last_error or "")
    c = await reasoner.assess(ctx)
    assert c.llm_status is LLMStatus.OK, c.llm_error


@pytest.fixture(scope="module")
def external_server() -> Iterator[tuple[str, str]]:
    """A second llama_cpp.server, started by the test itself (not by our supervisor)."""
    key = "test-key-123"
    with llama_server("--n_ctx", "1024", "--api_key", key) as port:
        yield f"http://127.0.0.1:{port}/v1", key


@module_loop
async def test_external_endpoint(external_server: tuple[str, str]) -> None:
    url, key = external_server
    await wait_serving(url, key)
    ctx = SCENARIOS["gun_at_night"]

    # llama-cpp-python wants json_object+schema; with it, the external mode answers.
    ext = replace(BASE, mode=LLMMode.EXTERNAL, url=url, api_key=key)
    ok = Reasoner(replace(ext, response_format="json_object"))
    await ok.start()
    try:
        h = await ok.health()
        assert h["state"] == "ready"
        assert h["mode"] == "external"
        a = await ok.assess(ctx)
        assert a.llm_status is LLMStatus.OK, a.llm_error
        assert a.risk_level.value == "critical"  # a gun: the rules hold the line
    finally:
        await ok.stop()

    # The OpenAI json_schema form (auto's choice for external servers) is what llama-cpp-python
    # rejects with HTTP 500: that is why supervised mode defaults to json_object.
    auto = Reasoner(ext)
    await auto.start()
    try:
        b = await auto.assess(ctx)
        assert b.llm_status is LLMStatus.FALLBACK
        assert "HTTP 500" in (b.llm_error or "")
    finally:
        await auto.stop()

    # A wrong key: health says unavailable, events fall back.
    bad = Reasoner(replace(ext, api_key="wrong", response_format="json_object"))
    await bad.start()
    try:
        h = await bad.health()
        assert h["state"] == "unavailable"
        assert "401" in h["last_error"]
        assert (await bad.assess(ctx)).llm_status is LLMStatus.FALLBACK
    finally:
        await bad.stop()


@module_loop
async def test_crash_loop_backs_off_and_stops_cleanly(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF not really a model" * 10)
    sup = SupervisedServer(
        SupervisorConfig(
            model_path=broken,
            backoff_initial_s=0.2,
            backoff_max_s=1.0,
            # A hang guard: the broken model must make it exit, not miss this deadline.
            ready_timeout_s=LLM_HANG_TIMEOUT_S,
        )
    )
    await sup.start()
    assert sup.state is ServerState.STARTING
    await eventually(lambda: sup.restarts >= 2, "two crashes")
    status = sup.status()
    assert status.restarts >= 2
    assert status.state is ServerState.RESTARTING
    assert status.last_exit_code not in (None, 0)
    assert status.last_error
    assert "exited" in status.last_error
    assert not await sup.wait_ready(0.1)
    await sup.stop()
    assert sup.status().state is ServerState.STOPPED
    assert sup.pid is None


@module_loop
async def test_missing_model_or_engine_fails_without_raising(tmp_path: Path) -> None:
    sup = SupervisedServer(SupervisorConfig(model_path=tmp_path / "nope.gguf"))
    await sup.start()
    assert sup.state is ServerState.FAILED
    assert "not found" in (sup.status().last_error or "")
    r = Reasoner(ReasoningSettings(model_path=tmp_path / "nope.gguf"))
    await r.start()
    a = await r.assess(scene("person"))
    assert a.llm_status is LLMStatus.FALLBACK
    assert [i["code"] for i in r.issues()] == ["llm_unavailable"]
    await r.stop()


def test_reasoning_does_not_import_torch_http_or_images() -> None:
    code = (
        "import sys, addon_server.reasoning as r; "
        "bad = [m for m in ('torch', 'addon_server.api', 'addon_server.app', 'PIL', 'cv2', "
        "'addon_server.imaging', 'llama_cpp') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_response_format_payloads_are_distinct() -> None:
    from addon_server.reasoning.llm import response_format_payload

    assert response_format_payload(ResponseFormat.JSON_OBJECT)["type"] == "json_object"  # type: ignore[index]
    assert response_format_payload(ResponseFormat.JSON_SCHEMA)["type"] == "json_schema"  # type: ignore[index]
