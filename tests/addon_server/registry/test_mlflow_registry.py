"""Models from an MLflow registry on S3, for real: SeaweedFS, an MLflow server, the zoo.

Each test publishes its own registered model (names do not collide), so a test also runs alone;
the outage test comes last because it takes the module's tracking server down.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

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
from addon_server.zoo.models.emotion import EMOTIONS
from addon_server.zoo.registry import Registry
from tests.addon_server.conftest import HANG_TIMEOUT_S
from tests.addon_server.registry.conftest import BUCKET, RegistryStack

GiB = 1024**3


def emotion_onnx(folder: Path, favourite: str) -> Path:
    """A tiny stand-in for ``emotion.onnx`` (same input and output names) that always answers
    ``favourite``: two versions that differ tell which one the zoo serves."""
    folder.mkdir(parents=True, exist_ok=True)
    bias = np.full(len(EMOTIONS), -4.0, dtype=np.float32)
    bias[EMOTIONS.index(favourite)] = 4.0
    nodes = [
        helper.make_node("Reshape", ["input_1:0", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weights"], ["mixed"]),
        helper.make_node("Add", ["mixed", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["Identity:0"], axis=1),
    ]
    initialisers = [
        numpy_helper.from_array(np.array([-1, 64 * 64], dtype=np.int64), "shape"),
        numpy_helper.from_array(np.zeros((64 * 64, len(EMOTIONS)), np.float32), "weights"),
        numpy_helper.from_array(bias, "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "emotion-stand-in",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["n", 64, 64, 1])],
        [helper.make_tensor_value_info("Identity:0", TensorProto.FLOAT, ["n", len(EMOTIONS)])],
        initialisers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "emotion.onnx"
    onnx.save(model, str(path))
    return path


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


def test_registry_settings_and_sources_are_checked(tmp_path: Path) -> None:
    data = {"server": {"data_dir": str(tmp_path)}}
    settings = parse(data, environ={"ZOO_MODEL_SOURCES": "pose=models:/pose@prod"})
    assert settings.zoo.sources == {"pose": "models:/pose@prod"}
    assert settings.registry.cache_dir == tmp_path / "registry"
    assert settings.registry.tracking_uri is None
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
    import yaml
    from ultralytics import YOLO
    from ultralytics.utils import ROOT

    uri = registry_stack.tracking_uri
    weights = tmp_path / "yolo11n-untrained.pt"
    model = YOLO("yolo11n.yaml")  # untrained (no downloads), with COCO's class names
    model.model.names = dict(yaml.safe_load((ROOT / "cfg/datasets/coco.yaml").read_text())["names"])
    model.save(str(weights))
    publish(weights, "detector-reg", uri, alias="prod")
    publish(weights, "detector-reg", uri)
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

        empty = RegistrySource(uri, tmp_path / "empty-cache", timeout_s=2.0)
        with pytest.raises(RegistryError, match=r"models:/emotion-outage@prod: the MLflow"):
            await asyncio.to_thread(empty.resolve, "models:/emotion-outage@prod")
    finally:
        await manager.close()
