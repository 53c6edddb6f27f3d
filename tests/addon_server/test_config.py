"""Configuration: YAML + environment overrides, validated; errors name the key and reason."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from addon_server.config import SECURITY_CLASSES, ConfigError, load, parse


def test_defaults() -> None:
    settings = parse({}, environ={})
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8095
    assert settings.server.api_token is None
    assert settings.server.max_body_bytes == 20 * 1024 * 1024
    assert settings.detector.classes == SECURITY_CLASSES
    assert settings.detector.confidence == 0.5
    assert settings.batching.max_batch_size == 8


def test_yaml_file_and_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "vigil.yaml"
    path.write_text(
        "server:\n  port: 9000\n  api_token: from-file\n"
        "detector:\n  confidence: 0.3\n  class_thresholds: {person: 0.6}\n"
        "devices:\n  cuda:0: {budget_gb: 22, services: [llm, detector]}\n"
        "  cuda:1: {budget_gb: 3.5, services: [zoo]}\n  cpu: {budget_gb: 8}\n"
    )
    env = {
        "PORT": "9100",
        "YOLO26_CONFIDENCE": "0.42",
        "VRAM_BUDGET_GB": "6",
        "YOLO26_MODEL_PATH": "/models/yolo26m.engine",
        "VIGIL_API_TOKEN": "from-env",
    }
    settings = load(path, environ=env)
    assert settings.server.port == 9100
    assert settings.server.api_token == "from-env"
    assert settings.detector.confidence == pytest.approx(0.42)
    assert settings.detector.class_thresholds == {"person": 0.6}
    assert settings.detector.model_path == "/models/yolo26m.engine"
    assert settings.devices.default_vram_budget_gb == 6.0
    by_id = {d.device_id: d for d in settings.devices.devices}
    assert by_id["cuda:0"].services == ("llm", "detector")
    assert by_id["cuda:1"].budget_gb == 3.5
    assert settings.source == str(path)


@pytest.mark.parametrize(
    ("document", "env", "fragment"),
    [
        ({"server": {"port": 70000}}, {}, "server.port: value must be at most 65535"),
        ({}, {"PORT": "eighty"}, "server.port: expected int (got 'eighty')"),
        ({}, {"YOLO26_CONFIDENCE": "1.5"}, "detector.confidence: value must be at most 1"),
        ({"detector": {"classes": []}}, {}, "detector.classes"),
        ({"detector": {"input_size": 400}}, {}, "detector.input_size: must be a multiple of 32"),
        ({"detector": {"backend": "tensorflow"}}, {}, "detector.backend"),
        ({"detecter": {}}, {}, "detecter: extra keys not allowed"),
        ({"devices": {"gpu0": {"budget_gb": 3}}}, {}, "devices.gpu0"),
        (
            {"devices": {"cuda:0": {"services": ["llm"]}, "cuda:1": {"services": ["llm"]}}},
            {},
            "'llm' is already placed on cuda:0",
        ),
        ({"devices": {"cpu": {"services": ["painter"]}}}, {}, "devices.cpu.services.0"),
        (
            {"batching": {"max_batch_size": 4, "preferred_batch_sizes": [8]}},
            {},
            "batching.preferred_batch_sizes: 8 is larger than max_batch_size 4",
        ),
    ],
)
def test_invalid_config_names_key_and_reason(document, env, fragment) -> None:
    with pytest.raises(ConfigError) as info:
        parse(document, environ=env)
    assert fragment in str(info.value)


def test_yaml_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad, environ={})
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load(scalar, environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(tmp_path / "missing.yaml", environ={})


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "addon_server", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_cli_exits_2_on_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "vigil.yaml"
    path.write_text("detector:\n  confidence: high\n")
    result = _cli("--config", str(path))
    assert result.returncode == 2
    assert "detector.confidence" in result.stderr
    assert "expected float" in result.stderr
    env_result = _cli("check-config", PORT="-1")
    assert env_result.returncode == 2
    assert "server.port" in env_result.stderr


def test_cli_check_config_ok(tmp_path: Path) -> None:
    path = tmp_path / "vigil.yaml"
    path.write_text("server:\n  port: 8123\n")
    result = _cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_cli_strict_placement_on_missing_gpu_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "vigil.yaml"
    path.write_text(
        f"server: {{data_dir: {tmp_path}}}\n"
        "devices:\n  strict: true\n  cuda:7: {services: [detector]}\n"
    )
    result = _cli("--config", str(path))
    assert result.returncode == 2
    assert "cuda:7" in result.stderr and "not present" in result.stderr


def test_example_config_documents_the_defaults() -> None:
    example = Path(__file__).parents[2] / "vigil.example.yaml"
    loaded = load(example, environ={})
    assert loaded == parse({}, environ={})  # the documented values are the real defaults


# --- the llm and reasoning sections: check-config refuses exactly what serve cannot run ----


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        (
            "reasoning:\n  rules: {nonsense: 1}\n",
            "reasoning.rules.nonsense: extra keys not allowed",
        ),
        ("reasoning:\n  rules: {night_start_hour: 24}\n", "reasoning.rules.night_start_hour"),
        (
            "reasoning:\n  rules: {threat_points: {axe: lots}}\n",
            "reasoning.rules.threat_points.axe",
        ),
        ("reasoning:\n  rules: {disabled_rules: [weather]}\n", "reasoning.rules.disabled_rules.0"),
        ("reasoning:\n  weights: {rules: 0, llm: 0}\n", "reasoning.weights: "),
        ("reasoning:\n  weights: {bias: 1}\n", "reasoning.weights.bias: extra keys not allowed"),
        ("llm:\n  timeout_s: -1\n", "llm.timeout_s: value must be at least 0.1"),
        ("llm:\n  backoff_initial_s: 100\n  backoff_max_s: 10\n", "llm.backoff_max_s"),
        ("llm:\n  url: ftp://example.org\n", "llm.url: an LLM URL must start with http"),
        ("llm:\n  mode: external\n", "llm.url: required when llm.mode is 'external'"),
        ("llm:\n  temprature: 0.1\n", "llm.temprature: extra keys not allowed"),
        ("llm:\n  response_format: xml\n", "llm.response_format"),
        ("llm:\n  probe_misses: 0\n", "llm.probe_misses"),
    ],
)
def test_cli_check_config_names_the_bad_llm_or_reasoning_key(
    tmp_path: Path, yaml_text: str, fragment: str
) -> None:
    """Before, check-config said OK to all of these and ``serve`` crashed on several
    (``reasoning: {rules: {nonsense: 1}}`` → an uncaught ValueError in create_app)."""
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml_text)
    result = _cli("check-config", "--config", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def _rule_bounds(pick: int) -> dict[str, Any]:
    """Every reasoning.rules key at one end of its declared range (0: low, 1: high)."""
    from dataclasses import fields

    from addon_server.reasoning.rules import RULE_NAMES, RuleConfig

    out: dict[str, Any] = {}
    for item in fields(RuleConfig):
        lo, hi = item.metadata.get("range", (None, None))
        end = (lo, hi)[pick]
        end = end if end is not None else (0 if pick == 0 else 10_000)
        default = getattr(RuleConfig(), item.name)
        if item.metadata.get("names"):
            out[item.name] = ["porch", "Back Yard"] if pick else []
        elif isinstance(default, frozenset):
            out[item.name] = list(RULE_NAMES) if pick else []
        elif isinstance(default, Mapping):
            out[item.name] = {"axe": end, "Gun": end}
        else:
            out[item.name] = end
    return out


ACCEPTED: list[dict[str, Any]] = [
    {},
    {
        "llm": {
            "mode": "supervised", "model_path": "/nowhere/model.gguf", "gpu_layers": -1,
            "ctx_size": 256, "parallel": 1, "threads": 1, "response_format": "none",
            "timeout_s": 0.1, "connect_timeout_s": 0.1, "queue_timeout_s": 0, "max_tokens": 16,
            "temperature": 0, "seed": 0, "repeat_penalty": 0.5, "ready_timeout_s": 1,
            "backoff_initial_s": 0.01, "backoff_max_s": 0.01, "stop_timeout_s": 0.1,
            "probe_interval_s": 0.05, "probe_timeout_s": 0.05, "probe_misses": 1,
        },
        "reasoning": {"weights": {"rules": 0, "llm": 0.1, "max_llm_decrease": 0},
                      "rules": _rule_bounds(0)},
    },
    {
        "llm": {
            "mode": "external", "url": "https://user:pw@llm.example.org:8443/v1/",
            "api_key": "k", "model": "qwen", "response_format": "json_schema",
            "timeout_s": 600, "connect_timeout_s": 60, "queue_timeout_s": 600,
            "max_tokens": 8192, "temperature": 2, "seed": 2**31 - 1, "repeat_penalty": 2,
            "ready_timeout_s": 3600, "backoff_initial_s": 600, "backoff_max_s": 3600,
            "stop_timeout_s": 120, "probe_interval_s": 600, "probe_timeout_s": 600,
            "probe_misses": 100, "ctx_size": 1_048_576, "parallel": 64,
        },
        "reasoning": {"weights": {"rules": 5, "llm": 0, "max_llm_decrease": 100},
                      "rules": _rule_bounds(1)},
    },
    {"llm": {"mode": "disabled", "url": None, "threads": None, "repeat_penalty": None}},
]  # fmt: skip


@pytest.mark.parametrize("document", ACCEPTED)
def test_every_config_check_config_accepts_builds_the_app(
    tmp_path: Path, document: dict[str, Any], counting_detector: Any
) -> None:
    """What ``check-config`` accepts, ``serve``'s app factory accepts too (it builds the
    reasoner, its client and its supervisor from the same settings)."""
    from addon_server.app import create_app

    document = {**document, "server": {"data_dir": str(tmp_path / "data")}}
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump(document))
    result = _cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    settings = load(path, environ={})
    create_app(settings, detector=counting_detector)
    assert settings.reasoning.rules.threat_points["gun"] >= -100  # the tables merge, lowercased


def test_one_owner_for_llm_defaults() -> None:
    """config, client and supervisor agree because they read one set of defaults."""
    from addon_server.reasoning.llm import LLMClientConfig
    from addon_server.reasoning.settings import DEFAULTS
    from addon_server.reasoning.supervisor import SupervisorConfig

    settings = parse({}, environ={}).reasoning
    client = LLMClientConfig()
    supervisor = SupervisorConfig(model_path=Path("/m.gguf"))
    assert settings == DEFAULTS
    assert settings.timeout_s == client.timeout_s == 20.0
    assert (client.temperature, client.seed) == (settings.temperature, settings.seed) == (0.0, 42)
    assert client.max_tokens == settings.max_tokens
    assert supervisor.ready_timeout_s == settings.ready_timeout_s
    assert supervisor.backoff_max_s == settings.backoff_max_s
    assert supervisor.probe_misses == settings.probe_misses
