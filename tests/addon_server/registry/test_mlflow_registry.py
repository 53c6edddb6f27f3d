"""Models from an MLflow registry on S3, for real: SeaweedFS, an MLflow server, the zoo.

Each test publishes its own registered model (names do not collide), so a test also runs alone;
the outage test comes last because it takes the module's tracking server down.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from addon_server.app import create_app
from addon_server.cli import main
from addon_server.config import ConfigError, parse
from addon_server.zoo.interface import Frame
from addon_server.zoo.manager import ZooManager
from addon_server.zoo.mlflow_source import (
    CHECKSUM_TAG,
    ChecksumError,
    RegistryError,
    RegistrySource,
    publish,
)
from addon_server.zoo.models.boxes import Box
from addon_server.zoo.registry import Registry
from tests.addon_server.conftest import HANG_TIMEOUT_S
from tests.addon_server.registry.conftest import BUCKET, Gate, RegistryStack, emotion_onnx

GiB = 1024**3
CAMERA = {"camera": "front_door"}


def expression(model: Any) -> str:
    """What the loaded emotion model says about one (blank) face box."""
    pixels = np.full((240, 320, 3), 128, dtype=np.uint8)
    (face,) = model.classify(Frame(pixels), [Box(100, 60, 100, 120)])
    return str(face.emotion)


def zoo_for(uri: str, source: RegistrySource, tmp_path: Path) -> ZooManager:
    """The real zoo manager with the real emotion loader, its weights named by ``uri``."""
    spec = replace(Registry()["emotion"], files=(uri,), idle_ttl_s=0)
    (tmp_path / "empty-models").mkdir(exist_ok=True)
    return ZooManager(
        "cpu", [spec], budget_bytes=4 * GiB, models_dir=tmp_path / "empty-models", registry=source
    )


def valid(document: Any, schema: str, spec: dict[str, Any]) -> None:
    """``document`` is what the add-on's OpenAPI document says ``schema`` is."""
    from jsonschema import Draft202012Validator

    reference = {"$ref": f"#/components/schemas/{schema}", "components": spec["components"]}
    Draft202012Validator(reference).validate(document)


def yolo_weights(path: Path) -> Path:
    """An untrained yolo11n (no downloads) with COCO's class names, saved to ``path``."""
    import yaml
    from ultralytics import YOLO
    from ultralytics.utils import ROOT

    model = YOLO("yolo11n.yaml")
    model.model.names = dict(yaml.safe_load((ROOT / "cfg/datasets/coco.yaml").read_text())["names"])
    model.save(str(path))
    return path


def two_detector_versions(name: str, tracking_uri: str, tmp_path: Path) -> None:
    """Versions 1 (alias ``prod``) and 2 of one detector: the name served tells them apart."""
    weights = yolo_weights(tmp_path / "yolo11n-untrained.pt")
    publish(weights, name, tracking_uri, alias="prod")
    publish(weights, name, tracking_uri)


def test_registry_settings_and_sources_are_checked(tmp_path: Path) -> None:
    data = {"server": {"data_dir": str(tmp_path)}}
    settings = parse(data, environ={"ZOO_MODEL_SOURCES": "pose=models:/pose@prod"})
    assert settings.zoo.sources == {"pose": "models:/pose@prod"}
    assert settings.registry.cache_dir == tmp_path / "registry"
    assert settings.registry.tracking_uri is None
    assert settings.registry.cache_keep == 2
    kept = parse(data, environ={"VIGIL_REGISTRY_CACHE_KEEP": "5"})
    assert kept.registry.cache_keep == 5
    with pytest.raises(ConfigError, match=r"registry\.cache_keep"):
        parse({"registry": {"cache_keep": 0}}, environ={})
    with pytest.raises(ConfigError, match=r"zoo\.sources.*expected a models:/"):
        parse({"zoo": {"sources": {"pose": "/models/pose.onnx"}}}, environ={})
    with pytest.raises(ConfigError, match=r"zoo\.sources: unknown model 'posse'"):
        parse({}, environ={"ZOO_MODEL_SOURCES": "posse=models:/pose@prod"})
    with pytest.raises(RegistryError, match="expected models:/<name>@<alias>"):
        RegistrySource(None, tmp_path).resolve("models:/pose@prod/extra")


async def test_publish_then_alias_switch_rolls_out_at_the_next_load(
    registry_stack: RegistryStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = registry_stack.tracking_uri
    happy = emotion_onnx(tmp_path / "v1", "happy")
    sad = emotion_onnx(tmp_path / "v2", "sad")
    argv = ["models", "publish", str(happy), "--name", "emotion-roll", "--alias", "prod"]
    assert main([*argv, "--tracking-uri", uri]) == 0
    assert "version 1 registered" in capsys.readouterr().out

    source = RegistrySource(uri, tmp_path / "cache")
    manager = zoo_for("models:/emotion-roll@prod", source, tmp_path)
    try:
        async with manager.use("emotion", deadline_s=HANG_TIMEOUT_S) as model:
            assert expression(model) == "happy"
        status = manager.model_status(manager.entry("emotion"))
        assert status["registry"]["version"] == "1" and status["registry"]["cached"] is False
        cached = tmp_path / "cache" / "emotion-roll" / "1" / "files" / "emotion.onnx"
        assert cached.read_bytes() == happy.read_bytes()

        # A second version without the alias changes nothing; a reload comes from the cache.
        assert publish(sad, "emotion-roll", uri).version == "2"
        await manager.unload("emotion")
        async with manager.use("emotion", deadline_s=HANG_TIMEOUT_S) as model:
            assert expression(model) == "happy"
        assert manager.model_status(manager.entry("emotion"))["registry"]["cached"] is True

        # Moving the alias (here with MLflow's own client, as a user would) is seen at the next
        # load, not in the middle of the loaded one.
        from mlflow import MlflowClient

        MlflowClient(uri, uri).set_registered_model_alias("emotion-roll", "prod", "2")
        async with manager.use("emotion", deadline_s=HANG_TIMEOUT_S) as model:
            assert expression(model) == "happy"  # still loaded: no swap under a caller
        await manager.unload("emotion")
        async with manager.use("emotion", deadline_s=HANG_TIMEOUT_S) as model:
            assert expression(model) == "sad"
        assert manager.model_status(manager.entry("emotion"))["registry"]["version"] == "2"
    finally:
        await manager.close()


async def test_the_add_on_loads_registry_models_and_names_the_version_served(
    registry_stack: RegistryStack,
    aiohttp_client: Any,
    make_settings: Any,
    counting_detector: Any,
    tmp_path: Path,
) -> None:
    uri = registry_stack.tracking_uri
    publish(emotion_onnx(tmp_path / "v1", "surprise"), "emotion-app", uri, alias="live")
    settings = make_settings(
        {
            "detector": {"warmup": False},
            "reid": {"models_dir": str(tmp_path / "none")},
            # The first load imports mlflow and downloads: a busy machine must not time it out.
            "zoo": {"deadline_s": HANG_TIMEOUT_S},
        },
        ZOO_MODEL_SOURCES="emotion=models:/emotion-app@live",
        MLFLOW_TRACKING_URI=uri,
    )
    assert settings.zoo.sources == {"emotion": "models:/emotion-app@live"}
    client = await aiohttp_client(create_app(settings, detector=counting_detector))

    before = {m["name"]: m for m in (await (await client.get("/v1/models")).json())["models"]}
    assert before["emotion"]["state"] == "unloaded"  # installed: the registry provides it
    loaded = await client.post("/v1/models/emotion/load")
    assert loaded.status == 200, await loaded.text()
    after = {m["name"]: m for m in (await (await client.get("/v1/models")).json())["models"]}
    assert after["emotion"]["registry"]["version"] == "1"
    assert after["emotion"]["registry"]["uri"] == "models:/emotion-app@live"
    zoo = await (await client.get("/v1/zoo/status")).json()
    assert "emotion-app" in str(zoo)


async def test_the_detector_comes_from_the_registry_and_a_restart_takes_the_new_alias(
    registry_stack: RegistryStack,
    aiohttp_client: Any,
    make_settings: Any,
    tmp_path: Path,
    bus_jpg: bytes,
) -> None:
    uri = registry_stack.tracking_uri
    two_detector_versions("detector-reg", uri, tmp_path)
    document = {"detector": {"input_size": 320, "warmup": False}}
    settings = make_settings(
        document, YOLO26_MODEL_PATH="models:/detector-reg@prod", MLFLOW_TRACKING_URI=uri
    )
    client = await aiohttp_client(create_app(settings))
    detected = await client.post("/v1/detect", data=bus_jpg, headers={"Content-Type": "image/jpeg"})
    assert detected.status == 200, await detected.text()
    assert (await detected.json())["model"] == "models:/detector-reg/1"
    await client.close()

    from mlflow import MlflowClient

    MlflowClient(uri, uri).set_registered_model_alias("detector-reg", "prod", "2")
    client = await aiohttp_client(create_app(settings))
    models = (await (await client.get("/v1/models")).json())["models"]
    detector = next(m for m in models if m["kind"] == "detector")
    assert detector["name"] == "models:/detector-reg/2"
    assert detector["registry"]["version"] == "2"


async def test_tampered_or_untagged_weights_are_refused(
    registry_stack: RegistryStack, tmp_path: Path
) -> None:
    uri = registry_stack.tracking_uri
    good = emotion_onnx(tmp_path / "v1", "fear")
    publish(good, "emotion-tamper", uri, alias="prod")
    source = RegistrySource(uri, tmp_path / "cache")
    first = source.resolve("models:/emotion-tamper@prod")
    assert first.path.read_bytes() == good.read_bytes()

    # A cached copy changed on disk is refused and fetched again, verified.
    first.path.write_bytes(b"tampered")
    again = source.resolve("models:/emotion-tamper@prod")
    assert again.cached is False and again.path.read_bytes() == good.read_bytes()

    # The object on S3 replaced behind the registry's back: refused, nothing cached.
    from mlflow import MlflowClient

    client = MlflowClient(uri, uri)
    folder = client.get_model_version("emotion-tamper", "1").source
    key = folder.removeprefix(f"s3://{BUCKET}/") + "/emotion.onnx"
    s3: Any = registry_stack.s3()
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == good.read_bytes()
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"not the published bytes")
    fresh = RegistrySource(uri, tmp_path / "fresh-cache")
    with pytest.raises(ChecksumError, match=r"sha256 mismatch for emotion\.onnx"):
        fresh.resolve("models:/emotion-tamper@prod")
    assert not (tmp_path / "fresh-cache" / "emotion-tamper" / "1").exists()

    # A version registered without checksums is never loaded; an unknown alias is named.
    client.create_registered_model("emotion-untagged")
    client.create_model_version("emotion-untagged", source=f"s3://{BUCKET}/nowhere")
    with pytest.raises(RegistryError, match=f"has no {CHECKSUM_TAG} tag"):
        fresh.resolve("models:/emotion-untagged/1")
    with pytest.raises(RegistryError, match=r"models:/emotion-tamper@nope: not in the MLflow"):
        fresh.resolve("models:/emotion-tamper@nope")


def cached_versions(cache: Path, name: str) -> list[str]:
    """The version folders of ``name`` in the cache (hidden staging folders are not)."""
    return sorted((p.name for p in (cache / name).iterdir() if p.name.isdigit()), key=int)


async def test_the_cache_keeps_the_newest_versions_and_those_in_use(
    registry_stack: RegistryStack, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    uri = registry_stack.tracking_uri
    client = MlflowClient(uri, uri)
    for version, favourite in enumerate(("happy", "sad", "angry"), start=1):
        published = publish(emotion_onnx(tmp_path / f"v{version}", favourite), "emotion-prune", uri)
        assert published.version == str(version)
    cache = tmp_path / "cache"
    source = RegistrySource(uri, cache)  # keeps 2, the default
    assert source.keep == 2
    seen = []
    for version in ("1", "2", "3"):
        if version == "3":  # a download of another process in progress: never touched
            (cache / "emotion-prune" / ".3-inprogress").mkdir()
        client.set_registered_model_alias("emotion-prune", "prod", version)
        assert source.resolve("models:/emotion-prune@prod").version == version
        seen.append(cached_versions(cache, "emotion-prune"))
    assert seen == [["1"], ["1", "2"], ["2", "3"]]
    assert (cache / "emotion-prune" / ".3-inprogress").is_dir()

    # Keeping one: the newest stays, and so does version 2, served pinned by this process,
    # though the alias moved past it; version 3 (no longer the alias's, unused) goes.
    narrow = RegistrySource(uri, cache, keep=1)
    pinned = narrow.resolve("models:/emotion-prune/2")
    assert pinned.cached is True
    publish(emotion_onnx(tmp_path / "v4", "fear"), "emotion-prune", uri, alias="prod")
    assert narrow.resolve("models:/emotion-prune@prod").version == "4"
    assert cached_versions(cache, "emotion-prune") == ["2", "4"]
    assert narrow.resolve("models:/emotion-prune/2").path.read_bytes() == pinned.path.read_bytes()


async def test_health_names_an_unreachable_registry_until_it_answers_again(
    registry_stack: RegistryStack,
    gate: Gate,
    aiohttp_client: Any,
    make_settings: Any,
    counting_detector: Any,
    tmp_path: Path,
) -> None:
    """The add-on reaches MLflow through a relay that is cut, then restored; the URL carries
    credentials, which /health must not show."""
    uri = registry_stack.tracking_uri
    publish(emotion_onnx(tmp_path / "v1", "happy"), "emotion-health", uri, alias="prod")
    settings = make_settings(
        {
            "detector": {"warmup": False},
            "reid": {"models_dir": str(tmp_path / "none")},
            "zoo": {"deadline_s": HANG_TIMEOUT_S},
            "registry": {"timeout_s": 2.0},
        },
        ZOO_MODEL_SOURCES="emotion=models:/emotion-health@prod",
        MLFLOW_TRACKING_URI=f"http://vigil:hunter2@127.0.0.1:{gate.port}",
    )
    client = await aiohttp_client(create_app(settings, detector=counting_detector))

    async def registry_issues() -> list[dict[str, Any]]:
        health = await (await client.get("/health")).json()
        return [i for i in health["issues"] if i["code"] == "registry_unreachable"]

    assert (await client.post("/v1/models/emotion/load")).status == 200
    assert await registry_issues() == []
    await client.post("/v1/models/emotion/unload")

    await gate.down()
    loaded = await client.post("/v1/models/emotion/load")
    assert loaded.status == 200, await loaded.text()
    assert (await loaded.json())["registry"]["version"] == "1"
    (issue,) = await registry_issues()
    assert issue["severity"] == "warning" and issue["model"] == "models:/emotion-health@prod"
    assert f"http://vigil:***@127.0.0.1:{gate.port}" in issue["message"]
    health = await (await client.get("/health")).json()
    assert "hunter2" not in str(health)
    valid(health, "Health", await (await client.get("/openapi.json")).json())
    record = os.environ.get("VIGIL_RECORD_HEALTH")
    if record:  # the HA fixture tests/components/vigil/fixtures/health_registry_unreachable.json
        await asyncio.to_thread(Path(record).write_text, json.dumps(health, indent=2) + "\n")
    assert "hunter2" not in str(await (await client.get("/v1/models")).json())
    assert "serving cached version 1" in issue["message"]

    # Still down: the loaded model stays as it is and so does the issue; back up, the next
    # load reaches the registry and the issue goes.
    await gate.up()
    assert len(await registry_issues()) == 1
    await client.post("/v1/models/emotion/unload")
    assert (await client.post("/v1/models/emotion/load")).status == 200
    assert await registry_issues() == []


async def test_an_unreachable_artifact_store_serves_the_cached_version(
    registry_stack: RegistryStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    uri = registry_stack.tracking_uri
    publish(emotion_onnx(tmp_path / "v1", "happy"), "emotion-s3", uri, alias="prod")
    source = RegistrySource(uri, tmp_path / "cache")
    assert source.resolve("models:/emotion-s3@prod").version == "1"
    publish(emotion_onnx(tmp_path / "v2", "sad"), "emotion-s3", uri)
    MlflowClient(uri, uri).set_registered_model_alias("emotion-s3", "prod", "2")

    with monkeypatch.context() as patch:  # S3 down: nothing listens on that port
        from tests.addon_server.conftest import free_ports

        patch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")
        patch.setenv("AWS_MAX_ATTEMPTS", "1")
        served = await asyncio.to_thread(source.resolve, "models:/emotion-s3@prod")
    assert served.version == "1" and served.cached is True
    assert served.note is not None and "artifact store of version 2" in served.note
    (issue,) = source.issues()
    assert issue["code"] == "registry_unreachable" and "cached version 1" in issue["message"]
    # Nothing half-downloaded is left behind.
    assert cached_versions(tmp_path / "cache", "emotion-s3") == ["1"]

    assert source.resolve("models:/emotion-s3@prod").version == "2"
    assert source.issues() == []


async def test_the_detector_rolls_to_a_switched_alias_without_a_restart(
    registry_stack: RegistryStack,
    aiohttp_client: Any,
    make_settings: Any,
    tmp_path: Path,
    bus_jpg: bytes,
) -> None:
    from mlflow import MlflowClient

    uri = registry_stack.tracking_uri
    two_detector_versions("detector-roll", uri, tmp_path)
    token = "roll-token"
    auth = {"Authorization": f"Bearer {token}"}
    settings = make_settings(
        {"detector": {"input_size": 320, "warmup": False}},
        YOLO26_MODEL_PATH="models:/detector-roll@prod",
        MLFLOW_TRACKING_URI=uri,
        VIGIL_API_TOKEN=token,
    )
    client = await aiohttp_client(create_app(settings))
    jpeg = {**auth, "Content-Type": "image/jpeg"}

    async def analyse() -> dict[str, Any]:
        answer = await client.post("/v1/analyze", params=CAMERA, data=bus_jpg, headers=jpeg)
        assert answer.status == 200, await answer.text()
        return dict(await answer.json())

    assert (await analyse())["model"] == "models:/detector-roll/1"
    unchanged = await client.post("/v1/models/detector/reload", headers=auth)
    assert unchanged.status == 200, await unchanged.text()
    assert (await unchanged.json())["changed"] is False
    assert (await client.post("/v1/models/detector/reload")).status == 401

    MlflowClient(uri, uri).set_registered_model_alias("detector-roll", "prod", "2")
    assert (await analyse())["model"] == "models:/detector-roll/1"  # until the reload

    # Analyses in flight across the swap all answer (on the old or the new version).
    started = time.perf_counter()
    reload_call = asyncio.ensure_future(client.post("/v1/models/detector/reload", headers=auth))
    during = await asyncio.gather(*(analyse() for _ in range(4)))
    reloaded = await reload_call
    print(f"reload (resolve, load, warm up, swap, drain): {time.perf_counter() - started:.2f} s")
    assert reloaded.status == 200, await reloaded.text()
    answer = await reloaded.json()
    assert answer["changed"] is True and answer["previous"] == "models:/detector-roll/1"
    assert answer["model"]["name"] == "models:/detector-roll/2"
    assert answer["model"]["registry"]["version"] == "2" and answer["model"]["state"] == "loaded"
    valid(answer, "DetectorReload", await (await client.get("/openapi.json", headers=auth)).json())
    assert {e["model"] for e in during} <= {"models:/detector-roll/1", "models:/detector-roll/2"}

    assert (await analyse())["model"] == "models:/detector-roll/2"
    models = (await (await client.get("/v1/models", headers=auth)).json())["models"]
    assert next(m for m in models if m["kind"] == "detector")["registry"]["version"] == "2"

    # A version that does not load (its bytes are what was published, but no model): the
    # reload fails naming it, and version 2 goes on serving.
    broken = tmp_path / "broken" / "yolo11n-untrained.pt"
    broken.parent.mkdir()
    broken.write_bytes(b"not a checkpoint")
    publish(broken, "detector-roll", uri, alias="prod")
    failed = await client.post("/v1/models/detector/reload", headers=auth)
    assert failed.status == 503
    error = (await failed.json())["error"]
    assert error["code"] == "reload_failed" and "version 3 failed to load" in error["message"]
    assert "models:/detector-roll/2 is still served" in error["message"]
    assert (await analyse())["model"] == "models:/detector-roll/2"


async def test_a_detector_the_registry_could_not_provide_loads_on_reload(
    registry_stack: RegistryStack,
    gate: Gate,
    aiohttp_client: Any,
    make_settings: Any,
    tmp_path: Path,
    bus_jpg: bytes,
) -> None:
    """The registry down at start with nothing cached: the add-on runs without a detector and
    /health says why, naming the registry; once it answers, a reload loads the detector."""
    publish(yolo_weights(tmp_path / "yolo.pt"), "detector-late", registry_stack.tracking_uri)
    from mlflow import MlflowClient

    uri = registry_stack.tracking_uri
    MlflowClient(uri, uri).set_registered_model_alias("detector-late", "prod", "1")
    await gate.down()
    settings = make_settings(
        {"detector": {"input_size": 320, "warmup": False}, "registry": {"timeout_s": 2.0}},
        YOLO26_MODEL_PATH="models:/detector-late@prod",
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{gate.port}",
    )
    client = await aiohttp_client(create_app(settings))
    health = await (await client.get("/health")).json()
    assert health["status"] == "unhealthy"
    (issue,) = (i for i in health["issues"] if i["code"] == "registry_unreachable")
    assert issue["model"] == "models:/detector-late@prod"
    assert (
        f"the MLflow registry at http://127.0.0.1:{gate.port} cannot be reached"
        in (issue["message"])
    )
    assert issue["message"].endswith("the model is not loaded")
    # Still down: the reload says so, and the add-on goes on without a detector.
    refused = await client.post("/v1/models/detector/reload")
    assert refused.status == 503
    assert (await refused.json())["error"]["code"] == "reload_failed"

    await gate.up()
    loaded = await client.post("/v1/models/detector/reload")
    assert loaded.status == 200, await loaded.text()
    assert (await loaded.json())["model"]["name"] == "models:/detector-late/1"
    health = await (await client.get("/health")).json()
    assert health["model_loaded"] is True
    assert all(i["code"] != "registry_unreachable" for i in health["issues"])
    detected = await client.post("/v1/detect", data=bus_jpg, headers={"Content-Type": "image/jpeg"})
    assert (await detected.json())["model"] == "models:/detector-late/1"


async def test_reload_refuses_a_detector_not_from_the_registry(
    aiohttp_client: Any, make_settings: Any, counting_detector: Any
) -> None:
    settings = make_settings({"detector": {"warmup": False}})
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    answer = await client.post("/v1/models/detector/reload")
    assert answer.status == 409
    error = (await answer.json())["error"]
    assert error["code"] == "not_from_registry" and "not a models:/ URI" in error["message"]
    assert (await client.post("/v1/detect", data=b"x")).status != 500  # still serving


async def test_a_registry_outage_serves_the_cached_version_and_says_so(
    registry_stack: RegistryStack, tmp_path: Path
) -> None:
    """Runs last: it stops the module's tracking server."""
    uri = registry_stack.tracking_uri
    publish(emotion_onnx(tmp_path / "v1", "neutral"), "emotion-outage", uri, alias="prod")
    source = RegistrySource(uri, tmp_path / "cache", timeout_s=2.0)
    manager = zoo_for("models:/emotion-outage@prod", source, tmp_path)
    try:
        async with manager.use("emotion", deadline_s=HANG_TIMEOUT_S) as model:
            assert expression(model) == "neutral"
        await manager.unload("emotion")

        registry_stack.stop_mlflow()
        async with manager.use("emotion", deadline_s=HANG_TIMEOUT_S) as model:
            assert expression(model) == "neutral"
        served = manager.model_status(manager.entry("emotion"))["registry"]
        assert served["cached"] is True and served["version"] == "1"
        assert "unreachable" in served["note"] and "cached version 1" in served["note"]
        # A pinned version in the cache needs no server at all.
        assert source.resolve("models:/emotion-outage/1").note is None

        (issue,) = source.issues()
        assert issue["model"] == "models:/emotion-outage@prod"

        empty = RegistrySource(uri, tmp_path / "empty-cache", timeout_s=2.0)
        with pytest.raises(RegistryError, match=r"models:/emotion-outage@prod: the MLflow"):
            await asyncio.to_thread(empty.resolve, "models:/emotion-outage@prod")
        (issue,) = empty.issues()
        assert f"the MLflow registry at {uri} cannot be reached" in issue["message"]
        assert issue["message"].endswith(
            "no copy is cached in "
            f"{tmp_path / 'empty-cache' / 'emotion-outage'}: the model is not loaded"
        )
    finally:
        await manager.close()
