"""Vigil on a real three-node Ray cluster (run by test_ray_cluster.py in a private netns).

One cluster for the module: a head and two fake-GPU hosts (``vigil_host_a``: the detector,
``vigil_host_b``: the zoo and the LLM), the application deployed with ``serve deploy`` from
``deploy/ray/vigil.yaml`` (only test-size arguments changed). The cases run in file order:
``test_lost_host_degrades_then_recovers`` kills host B and brings it back, the last one
does the same with host A.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from addon_server.ray_serve.client import npz
from tests.addon_server.conftest import ASSETS, addon_process_env
from tests.addon_server.scale.cluster import (
    REPO,
    SERVE_URL,
    Cluster,
    cluster,
    in_private_netns,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    not in_private_netns(), reason="run by test_ray_cluster.py inside a private netns"
)
MODELS_DIR = os.environ.get("VIGIL_MODELS_DIR", "/work/shared/models")
ZOO_TIMEOUT_S = 10.0
LLM_TIMEOUT_S = 280.0
"""The first call starts llama.cpp's server (slow on a busy 2-core box)."""
MB = 1024**2
BUDGET_MB = 150
"""Two of the served models (pose: 60 MB, person_reid: 30 MB by estimate) per Zoo replica."""


def test_config(tmp: Path) -> Path:
    """deploy/ray/vigil.yaml with test-size arguments: loopback, two Zoo replicas, short
    timeouts, a small ingress queue (for the 429 case), the shared models dir."""
    document = yaml.safe_load((REPO / "deploy" / "ray" / "vigil.yaml").read_text())
    document["http_options"]["host"] = "127.0.0.1"
    # One proxy, on the head: the add-on's address. Proxies on every node would share
    # 127.0.0.1:8000 here (SO_REUSEPORT), so killing a host would reset calls it never served.
    document["proxy_location"] = "HeadOnly"
    args = document["applications"][0]["args"]
    args.update(
        models_dir=MODELS_DIR,
        zoo_models=["pose", "person_reid"],
        zoo_budget_mb=BUDGET_MB,
        max_ongoing_requests={"ingress": 4},
        max_queued_requests={"ingress": 4},
    )
    args["replicas"]["zoo"] = 2
    args["timeouts"].update(detector=60, zoo=ZOO_TIMEOUT_S, llm=LLM_TIMEOUT_S)
    args.update(llm_url=None, llm_model_path="embedded")
    args["batch"].update(wait_timeout_s=0.05)
    path = tmp / "vigil.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


test_config.__test__ = False  # type: ignore[attr-defined]


def post(
    path: str, body: bytes, timeout_s: float = 120, **params: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    request = urllib.request.Request(f"{SERVE_URL}/{path}?{query}", data=body, method="POST")
    request.add_header("Content-Type", "image/jpeg" if path == "analyze" else "application/x-npz")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        text = err.read()
        try:
            document = json.loads(text)
        except ValueError:
            document = {"text": text.decode(errors="replace")}
        return err.code, document, dict(err.headers)


ADDON = "http://127.0.0.1:8095"
FALLBACK_RETRY_S = 5.0
"""How often the add-on asks a detector stage it knows is down (its fallback answers between)."""
TOKEN = "scale-test"


def addon_call(method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{ADDON}{path}", data=body, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    if body is not None:
        request.add_header("Content-Type", "image/jpeg")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def addon_analyze() -> dict[str, Any]:
    status, event = addon_call("POST", "/v1/analyze?camera=porch&llm=false", _zidane())
    assert status == 200, event
    return event


def stage_issues() -> list[dict[str, Any]]:
    _status, health = addon_call("GET", "/health")
    return [i for i in health["issues"] if i["code"] == "stage_unavailable"]


@pytest.fixture(scope="module")
def addon(ray_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The add-on as the front door: ``BACKEND=ray`` pointed at the application."""
    env = addon_process_env(
        BACKEND="ray",
        RAY_SERVE_URL=SERVE_URL,
        RAY_ZOO_TIMEOUT_S=str(ZOO_TIMEOUT_S + 2),
        VIGIL_DATA_DIR=str(tmp_path_factory.mktemp("addon")),
        VIGIL_API_TOKEN=TOKEN,
        LLM_MODE="ray",  # the application's LLM stage, asked by analyses with llm=true
        LLM_POLICY="always",
        RAY_RETRY_S=str(FALLBACK_RETRY_S),
        PORT="8095",
    )
    log = (tmp_path_factory.mktemp("log") / "addon.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "addon_server", "serve"], env=env, stdout=log, stderr=log
    )
    try:
        wait_for(_up, 180, "the add-on")
        yield
    finally:
        process.terminate()
        process.wait(30)


def _up() -> bool:
    try:
        return addon_call("GET", "/health")[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster({"vigil_host_a": 1, "vigil_host_b": 1}) as made:
        made.serve_deploy(test_config(tmp_path_factory.mktemp("cfg")))
        wait_for(_warm, 300, "the app, its models loaded")
        yield made


def _warm() -> bool:
    """Every served zoo model loaded (a cold load may outlast the stage timeout)."""
    status, answer, _ = post("analyze", _zidane(), models="pose,person_reid")
    return status == 200 and answer["degraded"] is False


def _zidane() -> bytes:
    return (ASSETS / "zidane.jpg").read_bytes()


def test_stages_run_on_their_hosts(ray_cluster: Cluster) -> None:
    status, answer, _ = post("analyze", _zidane(), camera="porch", models="pose")
    assert status == 200, answer
    assert answer["degraded"] is False and answer["missing_stages"] == [], answer
    assert any(d[0] == "person" for d in answer["detections"])
    detector = answer["detector"]
    zoo = answer["enrichments"]["results"]["pose"]
    assert detector["assigned"]["vigil_host_a"] > 0
    assert detector["assigned"]["GPU"] == 0.5  # a 1/n share of the host's (fake) GPU
    assert zoo["assigned"]["vigil_host_b"] > 0
    assert detector["node_id"] != zoo["node_id"]


def test_concurrent_images_are_batched(ray_cluster: Cluster) -> None:
    pixels = np.zeros((240, 320, 3), dtype=np.uint8)
    body = npz(**{str(i): pixels for i in range(8)})
    sizes: list[int] = []
    for _ in range(3):
        status, answer, _ = post("detect", body)
        assert status == 200, answer
        sizes += [r["batch_size"] for r in answer["results"]]
    assert max(sizes) > 1


def test_models_are_routed_by_id(ray_cluster: Cluster) -> None:
    replicas: dict[str, set[str]] = {"pose": set(), "person_reid": set()}
    for _ in range(3):
        for model, seen in replicas.items():
            status, answer, _ = post("analyze", _zidane(), camera="porch", models=model)
            assert status == 200, answer
            result = answer["enrichments"]["results"][model]
            seen.add(result["replica"])
            assert model in result["loaded"]
    assert all(len(found) == 1 for found in replicas.values()), replicas


def test_full_queue_answers_429(ray_cluster: Cluster) -> None:
    body = _zidane()
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda _: post("analyze", body, models=""), range(40)))
    codes = [status for status, _, _ in answers]
    assert 429 in codes and 200 in codes, codes
    refused = next(headers for status, _, headers in answers if status == 429)
    assert "retry-after" in {k.lower() for k in refused}


def test_supervised_llm_answers_on_its_host(ray_cluster: Cluster) -> None:
    """The LLM replica starts the bundled GGUF under the add-on's llama.cpp supervisor."""
    chat = {"messages": [{"role": "user", "content": "Reply with the word OK."}], "max_tokens": 4}
    status, answer, _ = post("llm", json.dumps(chat).encode(), timeout_s=LLM_TIMEOUT_S + 20)
    assert status == 200, answer
    assert answer["status"] == 200, answer
    assert answer["answer"]["choices"][0]["message"]["content"] is not None
    assert answer["assigned"]["vigil_host_b"] > 0
    assert "GPU" not in answer["assigned"]  # the shipped yaml gives the LLM no GPU share


def test_lost_host_degrades_then_recovers(ray_cluster: Cluster, addon: None) -> None:
    event = addon_analyze()
    assert event["degraded"] is False and event["missing_stages"] == []
    assert "pose" in event["enrichments"]["results"]  # the zoo on host B answered
    assert stage_issues() == []

    ray_cluster.kill("vigil_host_b")

    event = addon_analyze()  # the front door: detection and rules, without the zoo
    assert event["degraded"] is True
    assert event["missing_stages"] == ["zoo"]
    assert event["counts"]["person"] >= 1 and event["risk_level"]
    issues = stage_issues()
    assert [(i["service"], i["severity"]) for i in issues] == [("zoo", "warning")]
    record = os.environ.get("VIGIL_RECORD_HEALTH")
    if record:  # the HA fixture tests/components/vigil/fixtures/health_stage_unavailable.json
        Path(record).write_text(json.dumps(addon_call("GET", "/health")[1], indent=2) + "\n")

    status, answer, _ = post("analyze", _zidane(), camera="porch", models="pose")
    assert status == 200, answer
    assert answer["degraded"] is True
    assert answer["missing_stages"] == ["zoo"]
    assert answer["enrichments"]["skipped"]["pose"]["reason"] == "stage_unavailable"
    assert any(d[0] == "person" for d in answer["detections"])  # detection still answers
    # The zoo stage gave up at its own timeout (asyncio.wait_for), not after Ray's retries.
    assert answer["timings_ms"]["zoo"] < (ZOO_TIMEOUT_S + 5) * 1000

    # The LLM stage (LLM_MODE=ray) is on host B too: the refinement fails and names it.
    status, first = addon_call("POST", "/v1/analyze?camera=porch&llm=true", _zidane())
    assert status == 200, first
    assert first["llm_status"] == "pending"
    refined = fallback_refined(first["id"])
    assert refined["llm_status"] == "failed"
    assert refined["degraded"] is True
    assert refined["missing_stages"] == ["zoo", "llm"]  # revision 1's stages, and the LLM
    assert {i["service"] for i in stage_issues()} == {"zoo", "llm"}

    ray_cluster.start_host("vigil_host_b")

    def full() -> bool:
        code, found, _ = post("analyze", _zidane(), camera="porch", models="pose")
        return code == 200 and found["degraded"] is False

    wait_for(full, 240, "the zoo on the rejoined host")
    wait_for(lambda: addon_analyze()["degraded"] is False, 60, "full answers at the add-on")
    # The LLM stage is named until it answers again (/health asks its /v1/models).
    wait_for(lambda: stage_issues() == [], LLM_TIMEOUT_S + 60, "the LLM stage answering")


# -- the detector's host gone: the add-on's own fallback detector (h-fallback) ----------------


def fallback_refined(event_id: str) -> dict[str, Any]:
    """Revision 2 of an event (the LLM's refinement, done or failed), when it is stored."""
    found: dict[str, Any] = {}

    def refined() -> bool:
        found.update(addon_call("GET", f"/v1/events/{event_id}")[1])
        return bool(found.get("revision") == 2)

    wait_for(refined, LLM_TIMEOUT_S + 60, f"revision 2 of {event_id}")
    return found


def test_lost_detector_host_falls_back_then_recovers(ray_cluster: Cluster, addon: None) -> None:
    """Host A (the detector) is killed: the add-on answers from its embedded detector,
    degraded with ``detector`` named, and full answers return when host A rejoins."""
    from addon_server.detector import EMBEDDED_MODEL_NAME

    assert addon_analyze()["degraded"] is False

    ray_cluster.kill("vigil_host_a")

    started = time.monotonic()
    event = addon_analyze()  # 200: the fallback answered after the stage's timeout
    first_s = time.monotonic() - started
    assert event["degraded"] is True
    assert event["missing_stages"][0] == "detector"
    assert event["model"] == EMBEDDED_MODEL_NAME  # the add-on's own (the cluster's may match)
    assert event["counts"]["person"] >= 1 and event["risk_level"]
    assert "detector" in {i["service"] for i in stage_issues()}
    started = time.monotonic()
    event = addon_analyze()  # the stage is known down: straight to the fallback
    next_s = time.monotonic() - started
    print(f"\nfallback: first degraded answer {first_s:.1f} s, the next {next_s:.1f} s")
    assert event["missing_stages"][0] == "detector"

    ray_cluster.start_host("vigil_host_a")

    started = time.monotonic()
    wait_for(lambda: addon_analyze()["degraded"] is False, 300, "full answers from host A")
    print(f"fallback: full answers {time.monotonic() - started:.1f} s after host A rejoined")
    assert "detector" not in {i["service"] for i in stage_issues()}
