"""deploy/ray/vigil.yaml and the KubeRay RayService: both parse, agree, and place by host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from addon_server.ray_serve.placement import (
    MB,
    PlacementError,
    gpu_share,
    models_per_replica,
    parse_args,
)
from addon_server.zoo.manager import ESTIMATE_MARGIN
from addon_server.zoo.registry import Registry

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "ray"


def _load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


def test_serve_config_is_valid_for_serve_deploy() -> None:
    config = ServeDeploySchema.model_validate(_load("vigil.yaml"))
    (app,) = config.applications
    assert app.import_path == "addon_server.ray_serve.app:build"
    parse_args(app.args)  # the builder's own validation accepts the shipped arguments


def test_rayservice_carries_the_same_serve_config() -> None:
    service = _load("rayservice.yaml")
    assert service["kind"] == "RayService"
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == _load("vigil.yaml")


def test_every_placed_host_is_a_worker_group_resource() -> None:
    service = _load("rayservice.yaml")
    offered = set()
    for group in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        offered |= set(yaml.safe_load(group["rayStartParams"]["resources"].strip("'")))
    args = parse_args(_load("vigil.yaml")["applications"][0]["args"])
    assert {h for h in args.hosts.values() if h} <= offered


def test_actor_options_place_by_host_resource_and_share() -> None:
    args = parse_args({"hosts": {"detector": "vigil_host_a"}, "gpu": {"detector": 0.5}})
    options = args.deployment_options("detector")
    assert options["ray_actor_options"] == {"num_gpus": 0.5, "resources": {"vigil_host_a": 0.001}}
    assert args.deployment_options("llm")["ray_actor_options"] == {"num_gpus": 0.0}
    ingress = args.deployment_options("ingress")
    assert ingress["backpressure_config"]["status_code"] == 429


@pytest.mark.parametrize("share", [1, 0.5, 0.25, 1 / 3, 0])
def test_whole_fractions_are_accepted(share: float) -> None:
    assert gpu_share(share) == pytest.approx(share)


@pytest.mark.parametrize("share", [0.3, 0.4, 0.75, 1.5, -0.5, "half"])
def test_other_gpu_shares_are_refused(share: object) -> None:
    with pytest.raises(PlacementError, match=r"gpu\.zoo: a GPU share must be"):
        parse_args({"gpu": {"zoo": share}})


def test_unknown_argument_is_named() -> None:
    with pytest.raises(PlacementError, match="hostz"):
        parse_args({"hostz": {}})


def test_models_per_replica_follows_the_byte_budget() -> None:
    registry = Registry()
    specs = [registry["pose"], registry["person_reid"]]  # 60 MB and 30 MB by estimate
    # The zoo admits a load at its estimate plus a quarter (75 MB for pose): what Serve keeps
    # loaded per replica must pass that admission, or a routed model is refused for room.
    assert models_per_replica(150 * MB, specs) == 2
    assert models_per_replica(140 * MB, specs) == 1  # 2 × 60 MB fit, 2 × 75 MB do not
    assert models_per_replica(59 * MB, specs) == 1  # never zero: one model always fits
    assert models_per_replica(600 * MB, specs) == 8
    for budget_mb in (75, 149, 150, 268, 600, 1000):
        n = models_per_replica(budget_mb * MB, specs)
        admitted = n * registry["pose"].estimated_bytes * ESTIMATE_MARGIN
        assert n == 1 or admitted <= budget_mb * MB, budget_mb


def test_llm_is_a_url_or_a_supervised_model_not_both() -> None:
    assert parse_args({"llm_model_path": "embedded"}).llm_model_path == "embedded"
    with pytest.raises(PlacementError, match="llm_url: give llm_url or llm_model_path"):
        parse_args({"llm_url": "http://gpu-host:8080", "llm_model_path": "embedded"})
