"""Supervisor pieces that need no model: the child's command line and environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from addon_server.reasoning.supervisor import (
    SupervisorConfig,
    child_environment,
    free_port,
    server_command,
)


def args_of(cmd: list[str]) -> dict[str, str]:
    flags = cmd[2:]  # after "-m llama_cpp.server"
    return dict(zip(flags[::2], flags[1::2], strict=True))


def test_cpu_placement_forces_zero_gpu_layers() -> None:
    cfg = SupervisorConfig(model_path=Path("/m.gguf"), device="cpu", n_gpu_layers=-1, n_ctx=4096)
    cmd = server_command(cfg, 8123)
    assert cmd[:2] == ["-m", "llama_cpp.server"]
    a = args_of(cmd)
    assert a["--n_gpu_layers"] == "0"
    assert a["--n_ctx"] == "4096"
    assert a["--host"] == "127.0.0.1"
    assert a["--port"] == "8123"
    assert a["--model"] == "/m.gguf"


def test_gpu_placement_keeps_layers_and_threads() -> None:
    cfg = SupervisorConfig(
        model_path=Path("/m.gguf"), device="cuda:1", n_gpu_layers=-1, n_threads=3
    )
    a = args_of(server_command(cfg, 1))
    assert a["--n_gpu_layers"] == "-1"
    assert a["--n_threads"] == "3"


def test_child_environment_is_allow_listed() -> None:
    base = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "PORT": "8095",  # the add-on's own, a llama-cpp-python setting name too
        "HOST": "0.0.0.0",
        "API_KEY": "x",
        "MODEL": "/other.gguf",
        "VIGIL_API_TOKEN": "secret",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "GGML_SCHED_MAX_COPIES": "1",
    }
    env = child_environment("cuda:1", base)
    assert env["PATH"] == "/usr/bin"
    assert env["GGML_SCHED_MAX_COPIES"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "1"  # only the placed GPU
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    for leaked in ("PORT", "HOST", "API_KEY", "MODEL", "VIGIL_API_TOKEN"):
        assert leaked not in env
    cpu = child_environment("cpu", {**base, "OMP_WAIT_POLICY": "ACTIVE"})
    assert cpu["CUDA_VISIBLE_DEVICES"] == ""
    assert cpu["OMP_WAIT_POLICY"] == "ACTIVE"  # the user's choice wins


@pytest.mark.parametrize(
    "kwargs",
    [{"device": "gpu0"}, {"device": "cuda:x"}, {"n_ctx": 16}, {"backoff_initial_s": 0}],
)
def test_bad_supervisor_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        SupervisorConfig(model_path=Path("/m.gguf"), **kwargs)  # type: ignore[arg-type]


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
