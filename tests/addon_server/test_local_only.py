"""Local-only mode (issue 15 item 6): the LLM may only be reached on loopback or the LAN.

A real llama.cpp server (llama-cpp-python's, with the embedded SmolLM2) listens on loopback and
is accepted, by address and by a name the test's resolver maps to it. Public addresses are
refused before any socket is opened (no internet is needed: a refused address is never
contacted), whether written as a literal or reached through a name — including a name that
resolved locally first and publicly later. The only seam is the resolver function the client
takes; the connection itself is aiohttp's real one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from addon_server.app import create_app
from addon_server.config import ConfigError
from addon_server.reasoning.llm import LLMClient, LLMClientConfig, LLMError, LLMErrorKind
from addon_server.reasoning.locality import (
    LOCAL_NETWORKS,
    UnresolvedHostError,
    check_url,
    is_local,
)
from tests.addon_server.conftest import llama_server, wait_serving

PUBLIC = "93.184.215.14"
"""A public address (example.com's); never contacted: local-only refuses it first."""


class Names:
    """The test's name service: a mutable mapping, so a name can change its address."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        if host not in self.names:
            raise UnresolvedHostError(f"{host!r} does not resolve")
        return self.names[host]

    def blocking(self, host: str, port: int) -> Sequence[str]:
        return self.names.get(host, [])


@pytest.fixture(scope="module")
def llama_port() -> Iterator[int]:
    """A real llama.cpp server (llama-cpp-python) on loopback, started by the test."""
    with llama_server("--n_ctx", "512") as port:
        yield port


async def _serving(port: int) -> None:
    await wait_serving(f"http://127.0.0.1:{port}")


def _client(url: str, names: Names | None = None) -> LLMClient:
    return LLMClient(url, LLMClientConfig(local_only=True, resolve=names, connect_timeout_s=60))


async def test_a_loopback_server_is_accepted_by_address_and_by_a_lan_name(
    llama_port: int,
) -> None:
    await _serving(llama_port)
    async with _client(f"http://127.0.0.1:{llama_port}") as client:
        assert await client.list_models()
    names = Names({"llm.lan": ["127.0.0.1"]})
    async with _client(f"http://llm.lan:{llama_port}/v1", names) as client:
        assert await client.list_models()
    assert names.asked == ["llm.lan"]


@pytest.mark.parametrize(
    "url",
    [f"http://{PUBLIC}:8080", "http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:8080"],
)
async def test_a_public_address_is_refused_before_connecting(url: str) -> None:
    async with _client(url) as client:
        with pytest.raises(LLMError) as caught:
            await client.list_models()
    assert caught.value.kind is LLMErrorKind.CONNECTION
    assert "local-only mode refuses it" in caught.value.message


async def test_a_name_resolving_to_a_public_address_is_refused(llama_port: int) -> None:
    names = Names({"llm.example": [PUBLIC], "mixed.lan": ["127.0.0.1", PUBLIC]})
    for host in ("llm.example", "mixed.lan", "nowhere.lan"):
        async with _client(f"http://{host}:{llama_port}", names) as client:
            with pytest.raises(LLMError) as caught:
                await client.list_models()
        assert caught.value.kind is LLMErrorKind.CONNECTION, host
        assert "local-only mode refuses it" in caught.value.message or (
            "does not resolve" in caught.value.message
        )
    assert names.asked == ["llm.example", "mixed.lan", "nowhere.lan"]


async def test_a_name_that_later_resolves_publicly_is_refused_from_then_on(
    llama_port: int,
) -> None:
    await _serving(llama_port)
    names = Names({"gpu-box.local": ["127.0.0.1"]})
    async with _client(f"http://gpu-box.local:{llama_port}", names) as client:
        assert await client.list_models()
        names.names["gpu-box.local"] = [PUBLIC]
        with pytest.raises(LLMError, match=re.escape(f"resolves to {PUBLIC}")):
            await client.list_models()


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.31.255.255", True),
        ("192.168.1.20", True),
        ("169.254.10.10", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd12:3456::1", True),
        ("::ffff:192.168.1.2", True),
        ("172.32.0.1", False),
        ("100.64.0.1", False),  # CGNAT / Tailscale: not the home LAN (see locality.py)
        ("8.8.8.8", False),
        ("0.0.0.0", False),
        ("::", False),
        ("2001:4860:4860::8888", False),
        ("::ffff:8.8.8.8", False),
        ("not-an-address", False),
    ],
)
def test_what_counts_as_local(address: str, local: bool) -> None:
    assert is_local(address) is local
    assert len(LOCAL_NETWORKS) == 8


def test_the_load_time_check_resolves_names() -> None:
    names = Names({"nas.lan": ["192.168.1.5"], "cloud.example": [PUBLIC]})
    check_url("http://nas.lan:8080/v1", resolve=names.blocking)
    with pytest.raises(OSError, match=re.escape(f"resolves to {PUBLIC}")):
        check_url("http://cloud.example:8080", resolve=names.blocking)
    with pytest.raises(UnresolvedHostError):
        check_url("http://unknown.lan", resolve=names.blocking)


@pytest.mark.parametrize(
    "url", [f"http://{PUBLIC}:8080", "https://user:secret@8.8.8.8/v1", "http://100.64.3.4:8080"]
)
def test_the_configuration_refuses_a_public_llm_url(make_settings: Any, url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings({"llm": {"mode": "external"}}, LOCAL_ONLY="true", LLM_URL=url)
    message = str(caught.value)
    assert message.startswith("privacy.local_only: llm.url ")
    assert "local-only mode refuses it" in message
    assert "secret" not in message
    # without local-only the same URL is accepted
    assert not make_settings({"llm": {"mode": "external"}}, LLM_URL=url).privacy.local_only


def test_the_configuration_refuses_a_public_ray_llm_stage(make_settings: Any) -> None:
    """``LLM_MODE=ray``: the scene descriptions go to the Serve application's LLM stage, so
    its address is checked as ``llm.url`` is (every call is refused there anyway)."""
    url = f"http://{PUBLIC}:8000/vigil"
    with pytest.raises(ConfigError) as caught:
        make_settings({}, LOCAL_ONLY="1", LLM_MODE="ray", RAY_SERVE_URL=url)
    assert str(caught.value).startswith("privacy.local_only: ray.serve_url ")
    local = make_settings(
        {}, LOCAL_ONLY="1", LLM_MODE="ray", RAY_SERVE_URL="http://192.168.1.20:8000/vigil"
    )
    assert local.reasoning.local_only and local.reasoning.url == "http://192.168.1.20:8000/vigil"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:8080/v1", "http://[fd00::5]:11434"]
)
def test_the_configuration_accepts_a_local_llm_url(make_settings: Any, url: str) -> None:
    settings = make_settings({"llm": {"mode": "external"}}, LOCAL_ONLY="1", LLM_URL=url)
    assert settings.privacy.local_only and settings.reasoning.local_only


async def test_the_add_on_uses_a_local_llm_and_says_so_in_health(
    aiohttp_client: Any, make_settings: Any, counting_detector: Any, llama_port: int
) -> None:
    await _serving(llama_port)
    settings = make_settings(
        {"llm": {"mode": "external", "connect_timeout_s": 60}, "detector": {"warmup": False}},
        LOCAL_ONLY="on",
        LLM_URL=f"http://localhost:{llama_port}",
    )
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    health = await (await client.get("/health")).json()
    assert health["privacy"] == {"blur_unknown_faces": False, "local_only": True}
    assert health["llm"]["state"] == "ready", health["llm"]
