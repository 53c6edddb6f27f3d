"""Configuration: YAML + environment overrides, validated; errors name the key and reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
