"""The Grafana dashboard and the Prometheus scrape config match what the add-on exports.

Every PromQL expression is parsed by a real PromQL parser (``promql-parser``, the Rust crate
GreptimeDB uses), and every metric name it selects must be one the real app's ``/metrics``
exposes (a histogram's ``_bucket``/``_sum``/``_count``, a counter's ``_total``), so a renamed
collector breaks this test rather than a panel in someone's Grafana.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from addon_server.api.auth import OPEN_PATHS
from addon_server.api.health import ROUTES
from addon_server.app import create_app
from addon_server.config import parse
from tests.addon_server.conftest import CountingDetector

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "vigil.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
METRICS_ROUTE = next(r for r in ROUTES if r.operation_id == "metrics")
METRICS_PATH = METRICS_ROUTE.path

GRAFANA_VARIABLES = re.compile(r"\$__(rate_interval|interval|range)\b")
"""Grafana replaces these with durations before Prometheus sees the query."""

ASKED_FOR = {
    # per-GPU budget and use
    "vigil_device_budget_bytes",
    "vigil_device_used_bytes",
    "enrichment_vram_usage_bytes",
    # zoo loads and evictions
    "enrichment_model_load_time_seconds_count",
    "enrichment_model_evictions_total",
    # detector batch sizes and latency
    "vigil_detector_batch_size_bucket",
    "vigil_detector_batch_seconds_bucket",
    # LLM latency and fallbacks (refinements that failed), risk events by level
    "vigil_llm_latency_seconds_bucket",
    "vigil_llm_refinements_total",
    "vigil_events_total",
}


def _panels(document: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in document["panels"]:
        found += [panel, *_panels(panel)] if "panels" in panel else [panel]
    return found


def _expressions() -> list[str]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in _panels(document) for t in p.get("targets", [])]


def selected_metrics(expression: str) -> set[str]:
    """The metric names an expression selects (parsing it, which raises if it is not PromQL)."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            by_matcher = [m.value for m in node.matchers.matchers if m.name == "__name__"]
            names.update(n for n in [node.name, *by_matcher] if n)

    promql_parser.walk(promql_parser.parse(GRAFANA_VARIABLES.sub("5m", expression)), visit)
    return names


def test_the_checker_finds_the_selected_names() -> None:
    expression = 'sum by (le) (rate(a_bucket{x="y"}[$__rate_interval])) / on() b + {__name__="c"}'
    assert selected_metrics(expression) == {"a_bucket", "b", "c"}
    with pytest.raises(ValueError, match="parenthesis"):
        selected_metrics("sum(rate(a[5m])")


def test_the_dashboard_is_grafana_json_with_a_query_per_panel() -> None:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert document["uid"] == "vigil"
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in _panels(document) if p["type"] != "row"]
    assert len({p["id"] for p in _panels(document)}) == len(_panels(document))
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_expression_parses_and_the_asked_panels_are_there() -> None:
    referenced = set().union(*(selected_metrics(e) for e in _expressions()))
    assert referenced >= ASKED_FOR, sorted(ASKED_FOR - referenced)


def _exported(exposition: str) -> set[str]:
    """Every sample name the exposition's families can have (declared even without samples)."""
    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


async def test_every_metric_the_dashboard_names_is_exported(
    aiohttp_client: Any, make_settings: Any, counting_detector: CountingDetector
) -> None:
    client = await aiohttp_client(create_app(make_settings(), detector=counting_detector))
    response = await client.get(METRICS_PATH)
    assert response.status == 200
    exported = _exported(await response.text())
    for expression in _expressions():
        missing = selected_metrics(expression) - exported
        assert not missing, f"{expression}: {sorted(missing)} not exported by /metrics"


def test_the_prometheus_config_scrapes_the_metrics_route() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "vigil"]
    assert job["metrics_path"] == METRICS_PATH
    (target,) = [t for group in job["static_configs"] for t in group["targets"]]
    assert int(target.rsplit(":", 1)[1]) == parse({}, environ={}).server.port
    # /metrics is behind the API token (only /health is open), so the scrape sends it.
    assert METRICS_ROUTE.auth and METRICS_PATH not in OPEN_PATHS
    assert job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"]


async def test_a_scrape_as_configured_is_answered(
    aiohttp_client: Any, make_settings: Any, counting_detector: CountingDetector
) -> None:
    """What the config makes Prometheus send (the path, the token's Bearer header) works."""
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    token = "scrape-token"
    settings = make_settings({"server": {"api_token": token}})
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    assert (await client.get(job["metrics_path"])).status == 401
    scheme = job["authorization"]["type"]
    response = await client.get(job["metrics_path"], headers={"Authorization": f"{scheme} {token}"})
    assert response.status == 200
    assert "vigil_events_total" in _exported(await response.text())
