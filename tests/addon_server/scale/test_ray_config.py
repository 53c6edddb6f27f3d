"""``BACKEND=ray``: the add-on's settings for the Serve application, and their refusals."""

from __future__ import annotations

import pytest

from addon_server.config import ConfigError, parse


def test_backend_ray_from_the_environment() -> None:
    settings = parse(
        {},
        environ={
            "BACKEND": "ray",
            "RAY_SERVE_URL": "http://head:8000/vigil",
            "RAY_ZOO_TIMEOUT_S": "2.5",
        },
    )
    assert settings.detector.backend == "ray"
    assert settings.detector.ray.serve_url == "http://head:8000/vigil"
    assert settings.detector.ray.zoo_timeout_s == 2.5
    assert settings.detector.ray.detector_timeout_s == 10.0  # the default


def test_backend_ray_needs_the_serve_url() -> None:
    with pytest.raises(ConfigError, match=r"ray\.serve_url: required with backend 'ray'"):
        parse({}, environ={"BACKEND": "ray"})


@pytest.mark.parametrize("url", ["head:8000", "file:///etc/passwd", "http://"])
def test_serve_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError, match=r"ray\.serve_url: expected an http\(s\) URL"):
        parse({"ray": {"serve_url": url}}, environ={})


def test_stage_timeout_is_bounded() -> None:
    with pytest.raises(ConfigError, match=r"ray\.zoo_timeout_s"):
        parse({"ray": {"zoo_timeout_s": 0}}, environ={})


def test_detector_fallback_and_retry_from_the_environment() -> None:
    base = {"BACKEND": "ray", "RAY_SERVE_URL": "http://head:8000/vigil"}
    ray = parse({}, environ=base).detector.ray
    assert (ray.detector_fallback, ray.retry_s) == ("local", 30.0)  # the defaults
    ray = parse({}, environ={**base, "RAY_DETECTOR_FALLBACK": "NONE", "RAY_RETRY_S": "2"})
    assert (ray.detector.ray.detector_fallback, ray.detector.ray.retry_s) == ("none", 2.0)


def test_detector_fallback_is_local_or_none() -> None:
    with pytest.raises(ConfigError, match=r"ray\.detector_fallback"):
        parse({"ray": {"detector_fallback": "triton"}}, environ={})


def test_llm_mode_ray_talks_to_the_serve_application() -> None:
    settings = parse({}, environ={"LLM_MODE": "ray", "RAY_SERVE_URL": "http://head:8000/vigil"})
    assert settings.reasoning.mode == "ray"
    assert settings.reasoning.url == "http://head:8000/vigil"
    with pytest.raises(ConfigError, match=r"ray\.serve_url: required with llm\.mode 'ray'"):
        parse({}, environ={"LLM_MODE": "ray"})
    with pytest.raises(ConfigError, match=r"llm\.url: not used with llm\.mode 'ray'"):
        parse(
            {},
            environ={
                "LLM_MODE": "ray",
                "RAY_SERVE_URL": "http://head:8000/vigil",
                "LLM_URL": "http://127.0.0.1:8080/v1",
            },
        )


# -- the Serve application's registry arguments (the Zoo replicas' models:/ sources) ---------


def test_app_args_take_the_registry_and_the_zoo_sources() -> None:
    from addon_server.config import RegistrySettings
    from addon_server.ray_serve.placement import parse_args, zoo_settings

    raw = {
        "zoo": {"sources": {"emotion": "models:/emotion-x@prod"}},
        "registry": {"tracking_uri": "http://mlflow:5000", "cache_dir": "/cache"},
    }
    args = parse_args(raw)
    zoo, registry = zoo_settings(args.zoo, args.registry)
    assert zoo.sources == {"emotion": "models:/emotion-x@prod"}
    assert registry.tracking_uri == "http://mlflow:5000"
    assert str(registry.cache_dir) == "/cache"
    # What is not given is the add-on's own default (one schema, one set of defaults).
    default = RegistrySettings()
    assert (registry.timeout_s, registry.cache_keep) == (default.timeout_s, default.cache_keep)
    assert parse_args({}).registry == {}  # no registry: local files only, as before


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"registry": {"cache_keep": 0}}, r"registry\.cache_keep: value must be at least 1"),
        ({"registry": {"tracking": "http://x"}}, r"registry\.tracking: extra keys not allowed"),
        ({"registry": "http://x"}, r"registry: expected dict"),
        ({"zoo": {"sources": {"posse": "models:/p@a"}}}, r"zoo\.sources: unknown model 'posse'"),
        ({"zoo": {"sources": {"pose": "/models/pose.onnx"}}}, r"zoo\.sources.*models:/"),
    ],
)
def test_app_args_refuse_a_bad_registry_or_source(raw: dict[str, object], message: str) -> None:
    from addon_server.ray_serve.placement import PlacementError, parse_args

    with pytest.raises(PlacementError, match=message):
        parse_args(raw)
