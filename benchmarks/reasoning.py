"""Benchmark of the reasoning stage: prefix cache, client overhead, restart-to-ready.

Run with the add-on venv (needs requirements/llm.txt):

    .venv-addon/bin/python benchmarks/reasoning.py [--repeats 5] [--threads 2] [--json out.json]

Figures, all in one run on the embedded SmolLM2-135M (or ``--model``):

1. **Static-prefix cache.** Prompt processing (``max_tokens=1``) and a full answer with the
   static system prompt (llama.cpp reuses the cached prefix, evaluates only the scene lines)
   against the same prompts with a per-call nonce at the very start of the system prompt (the
   cache can't match, every token is evaluated): the difference is what keeping the prefix
   byte-identical saves per event.
2. **Client vs llama.cpp.** Tokens/s of the same requests (same messages, schema grammar,
   max_tokens, temperature 0) through our supervised server + aiohttp client and through
   ``llama_cpp.Llama`` in-process, interleaved request by request so background load hits
   both alike. The two sides' answers can differ in length (server-side sampling defaults),
   so a second pair generates exactly ``--fixed-tokens`` tokens without grammar, end of turn
   banned: identical work, and the ratio is the price of the process boundary.
3. **Restart-to-ready.** SIGKILL the supervised server and time until it serves again (death
   noticed → backoff → model load → ``/v1/models`` answers), and the load alone.

The end-to-end analyze latency split by stage is in benchmarks/analyze_latency.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The supervised child gets passive OpenMP waiting (see supervisor.child_environment); give the
# in-process side the same, before llama.cpp's OpenMP runtime starts, for a fair comparison.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from addon_server.reasoning.context import (
    BBox,
    DetectedObject,
    HistoryPoint,
    PersonSighting,
    SceneContext,
    Sighting,
    Threat,
)
from addon_server.reasoning.llm import (
    LLMClient,
    LLMClientConfig,
    ResponseFormat,
    response_format_payload,
)
from addon_server.reasoning.prompt import SYSTEM_PROMPT, build_messages
from addon_server.reasoning.reasoner import embedded_model_path
from addon_server.reasoning.rules import RuleEngine
from addon_server.reasoning.supervisor import SupervisedServer, SupervisorConfig


def scenes() -> list[SceneContext]:
    """Distinct scenes so each user message differs (as consecutive events do)."""
    from datetime import datetime, timedelta, timezone

    tz = timezone(timedelta(hours=1))
    out = []
    for i in range(12):
        objs = [DetectedObject("person", 0.9, BBox(10, 10, 100, 300), 640, 480)] * (1 + i % 3)
        if i % 2:
            objs.append(DetectedObject("car", 0.8, BBox(300, 200, 200, 100), 640, 480))
        out.append(
            SceneContext(
                camera=["front_door", "back_yard", "garage"][i % 3],
                timestamp=datetime(2026, 11, 23, (2 + 5 * i) % 24, (7 * i) % 60, tzinfo=tz),
                objects=tuple(objs),
                enrichments={"w": [Threat(model="w", confidence=0.9, label="knife")]}
                if i % 4 == 0
                else {},
                persons=(PersonSighting(None, 0.3, (Sighting("garage", 60.0 * (i + 1)),)),),
                history=tuple(HistoryPoint(30.0 * k, 1) for k in range(1, i % 5 + 1)),
            )
        )
    return out


def messages() -> list[list[dict[str, str]]]:
    """What the reasoner sends for each scene: facts plus the rule engine's verdict."""
    engine = RuleEngine()
    return [build_messages(s, result=engine.evaluate(s)) for s in scenes()]


REPEAT_PENALTY = 1.3  # the supervised default (ReasoningSettings.resolved_repeat_penalty)


class InProcess:
    """llama_cpp.Llama in this process: llama.cpp itself, no HTTP, no JSON hop."""

    def __init__(self, args: argparse.Namespace, model: Path) -> None:
        from llama_cpp import Llama

        t0 = time.perf_counter()
        self.llm = Llama(
            model_path=str(model),
            n_ctx=args.ctx,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            n_gpu_layers=0,
            seed=1,
            verbose=False,
        )
        self.load_s = time.perf_counter() - t0
        self.max_tokens = args.max_tokens
        self.fmt = response_format_payload(ResponseFormat.JSON_OBJECT)

    def end_tokens(self) -> dict[str, float]:
        """logit_bias that bans the end-of-turn tokens, so every answer is max_tokens long."""
        ids = {self.llm.token_eos()}
        ids.update(self.llm.tokenize(b"<|im_end|>", add_bos=False, special=True))
        return {str(i): -100.0 for i in ids}

    def run_fixed(self, msgs: list[dict[str, str]], n: int, bias: dict[str, float]) -> float:
        t0 = time.perf_counter()
        out: Any = self.llm.create_chat_completion(
            messages=msgs,  # type: ignore[arg-type]
            max_tokens=n,
            temperature=0.0,
            logit_bias=bias,  # type: ignore[arg-type]
        )
        assert out["usage"]["completion_tokens"] == n, out["usage"]
        return time.perf_counter() - t0

    def run(self, msgs: list[dict[str, str]]) -> tuple[float, int]:
        t0 = time.perf_counter()
        out: Any = self.llm.create_chat_completion(
            messages=msgs,  # type: ignore[arg-type]
            max_tokens=self.max_tokens,
            temperature=0.0,
            seed=1,
            repeat_penalty=REPEAT_PENALTY,
            response_format=self.fmt,  # type: ignore[arg-type]
        )
        return time.perf_counter() - t0, int(out["usage"]["completion_tokens"])


def with_nonce(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Defeat the prefix cache: a different first line of the system prompt every call."""
    first = dict(messages[0])
    first["content"] = f"Request {uuid.uuid4().hex}.\n" + first["content"]
    return [first, *messages[1:]]


async def timed(client: LLMClient, messages: list[dict[str, str]]) -> tuple[float, int]:
    """Latency (s) and completion tokens of one request; a failed parse still counts time."""
    t0 = time.perf_counter()
    try:
        ans = await client.complete(messages)
        tokens = ans.completion_tokens or 0
    except Exception as exc:  # a tiny model may truncate with max_tokens=1: time is what counts
        tokens = 0
        if "parse" not in str(exc):
            raise
    return time.perf_counter() - t0, tokens


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


async def bench_server(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    sup = SupervisedServer(
        SupervisorConfig(
            model_path=model,
            n_ctx=args.ctx,
            n_threads=args.threads,
            backoff_initial_s=args.backoff,
            backoff_max_s=max(args.backoff, 1.0),
        )
    )
    res: dict[str, Any] = {}
    t0 = time.perf_counter()
    await sup.start()
    assert await sup.wait_ready(300), sup.status()
    res["first_start_to_ready_s"] = time.perf_counter() - t0
    base = {
        "temperature": 0.0,
        "seed": 1,
        "timeout_s": 300.0,
        "response_format": ResponseFormat.JSON_OBJECT,
        "queue_timeout_s": 300.0,
    }
    prompt_client = LLMClient(sup.base_url, LLMClientConfig(max_tokens=16, **base))  # type: ignore[arg-type]
    full_client = LLMClient(sup.base_url, LLMClientConfig(max_tokens=args.max_tokens, **base))  # type: ignore[arg-type]
    msgs = messages()
    n = args.repeats
    try:
        # Very first request after the load: nothing cached at all.
        res["very_first_request_s"], _ = await timed(prompt_client, msgs[0])
        for label, client in (("prompt", prompt_client), ("answer", full_client)):
            cached, cold, cached_tok, cold_tok = [], [], [], []
            for i in range(n):
                m = msgs[(i + 1) % len(msgs)]
                await timed(client, msgs[i % len(msgs)])  # put the static prefix in the cache
                dt, tok = await timed(client, m)
                cached.append(dt)
                cached_tok.append(tok)
                dt, tok = await timed(client, with_nonce(m))
                cold.append(dt)
                cold_tok.append(tok)
            res[f"{label}_cached_s"] = med(cached)
            res[f"{label}_cold_s"] = med(cold)
            res[f"{label}_cached_tokens"] = med(cached_tok)
            res[f"{label}_cold_tokens"] = med(cold_tok)

        # Same requests through our server+client and through llama.cpp in-process,
        # interleaved so that background load drifts hit both alike.
        inproc = InProcess(args, model)
        res["inprocess_load_s"] = inproc.load_s
        await asyncio.to_thread(inproc.run, msgs[0])  # warm its cache like the server's
        client_rates, inproc_rates, client_tok, inproc_tok = [], [], [], []
        for i in range(n):
            m = msgs[i % len(msgs)]
            dt, tok = await timed(full_client, m)
            if tok:
                client_rates.append(tok / dt)
                client_tok.append(tok)
            dt, tok = await asyncio.to_thread(inproc.run, m)
            if tok:
                inproc_rates.append(tok / dt)
                inproc_tok.append(tok)
        # Identical work on both sides: no grammar, end-of-turn banned, exactly N tokens.
        bias = inproc.end_tokens()
        fixed_client, fixed_inproc = [], []
        for i in range(n):
            m = msgs[i % len(msgs)]
            body = {
                "messages": m,
                "max_tokens": args.fixed_tokens,
                "temperature": 0.0,
                "logit_bias": bias,
            }
            t = time.perf_counter()
            data = await full_client.chat_raw(body)
            dt = time.perf_counter() - t
            assert data["usage"]["completion_tokens"] == args.fixed_tokens, data["usage"]
            fixed_client.append(args.fixed_tokens / dt)
            dt = await asyncio.to_thread(inproc.run_fixed, m, args.fixed_tokens, bias)
            fixed_inproc.append(args.fixed_tokens / dt)
        res["fixed_tokens"] = args.fixed_tokens
        res["fixed_client_tokens_per_s"] = med(fixed_client)
        res["fixed_inprocess_tokens_per_s"] = med(fixed_inproc)
        del inproc
        res["client_tokens_per_s"] = med(client_rates)
        res["inprocess_tokens_per_s"] = med(inproc_rates)
        res["client_tokens"] = med(client_tok)
        res["inprocess_tokens"] = med(inproc_tok)

        # Restart-to-ready after SIGKILL.
        r2r, loads = [], []
        for _ in range(args.restarts):
            pid = sup.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            while sup.state.value == "ready":
                await asyncio.sleep(0.005)
            assert await sup.wait_ready(300)
            st = sup.status()
            r2r.append(st.restart_to_ready_seconds or float("nan"))
            loads.append(st.load_seconds or float("nan"))
        res["restart_to_ready_s"] = med(r2r)
        res["restart_load_s"] = med(loads)
        res["restart_backoff_s"] = args.backoff
    finally:
        await prompt_client.close()
        await full_client.close()
        await sup.stop()
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="GGUF (default: embedded SmolLM2)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--ctx", type=int, default=1024)
    p.add_argument("--max-tokens", type=int, default=320)
    p.add_argument("--fixed-tokens", type=int, default=128, help="length of the fixed runs")
    p.add_argument("--backoff", type=float, default=0.1, help="initial restart backoff (s)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()
    model = args.model or embedded_model_path()
    print(f"model {model.name}, threads {args.threads}, ctx {args.ctx}, repeats {args.repeats}")
    print(f"static system prompt: {len(SYSTEM_PROMPT)} chars")

    res = asyncio.run(bench_server(args, model))

    saved = res["prompt_cold_s"] - res["prompt_cached_s"]
    print("\n-- static-prefix cache (median per request) --")
    print(f"prompt+16 tok, cold prefix  {res['prompt_cold_s'] * 1000:8.1f} ms")
    print(f"prompt+16 tok, cached pfx  {res['prompt_cached_s'] * 1000:8.1f} ms")
    print(
        f"  saved per event           {saved * 1000:8.1f} ms  "
        f"({saved / res['prompt_cold_s'] * 100:.0f}% of prompt time)"
    )
    print(
        f"full answer, cold prefix    {res['answer_cold_s'] * 1000:8.1f} ms "
        f"({res['answer_cold_tokens']:.0f} tokens)"
    )
    print(
        f"full answer, cached prefix  {res['answer_cached_s'] * 1000:8.1f} ms "
        f"({res['answer_cached_tokens']:.0f} tokens)"
    )
    print(f"very first request          {res['very_first_request_s'] * 1000:8.1f} ms")
    print("\n-- generation throughput (same requests, interleaved, temperature 0) --")
    print(
        f"through server + client     {res['client_tokens_per_s']:8.1f} tok/s "
        f"({res['client_tokens']:.0f} tokens/answer)"
    )
    print(
        f"llama_cpp.Llama in-process  {res['inprocess_tokens_per_s']:8.1f} tok/s "
        f"({res['inprocess_tokens']:.0f} tokens/answer)"
    )
    ratio = res["client_tokens_per_s"] / res["inprocess_tokens_per_s"]
    print(f"  ratio client / in-process {ratio:8.2f}  (answers differ in length: see below)")
    print(f"same {res['fixed_tokens']} tokens, no grammar, end-of-turn banned:")
    print(f"through server + client     {res['fixed_client_tokens_per_s']:8.1f} tok/s")
    print(f"llama_cpp.Llama in-process  {res['fixed_inprocess_tokens_per_s']:8.1f} tok/s")
    ratio = res["fixed_client_tokens_per_s"] / res["fixed_inprocess_tokens_per_s"]
    print(f"  ratio client / in-process {ratio:8.2f}")
    print("\n-- supervision --")
    print(f"first start to ready        {res['first_start_to_ready_s']:8.2f} s")
    print(
        f"restart to ready (SIGKILL)  {res['restart_to_ready_s']:8.2f} s "
        f"(backoff {res['restart_backoff_s']:g} s + load {res['restart_load_s']:.2f} s)"
    )
    print(f"in-process model load       {res['inprocess_load_s']:8.2f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
