"""Runtimes are set up once per device, measured and booked on their own line, so that no
model's measurement includes the runtime's one-off set-up (issue 13 G2)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from addon_server.zoo.interface import ModelLoadError, ModelState
from addon_server.zoo.manager import ZooManager
from addon_server.zoo.memory import steady_allocator
from addon_server.zoo.registry import ModelSpec
from addon_server.zoo.runtimes import PRIMERS
from tests.addon_server.zoo.ballast import MB, spec
from tests.addon_server.zoo.test_manager import manager

RUNTIME = "numpy"
"""A module that is installed, so the manager counts models needing it as installed."""


class Setup:
    """A runtime's one-off state: DeclaredProbe measures its ``nbytes``."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.array = np.ones(nbytes, dtype=np.uint8)


def needing(name: str, nbytes: int) -> ModelSpec:
    return dataclasses.replace(spec(name, nbytes), requires=(RUNTIME,))


def zoo_with(primer: Any, specs: list[ModelSpec], budget_mb: int = 100) -> ZooManager:
    return manager(specs, budget_mb, primers={RUNTIME: primer})


async def test_a_runtime_is_set_up_once_and_booked_apart_from_the_models() -> None:
    calls: list[str] = []

    def primer(device: str) -> Setup:
        calls.append(device)
        return Setup(7 * MB)

    zoo = zoo_with(primer, [needing("a", 20 * MB), needing("b", 10 * MB)])
    assert await zoo.prime_runtimes() == [RUNTIME]
    assert zoo.runtime_bytes() == 7 * MB
    assert zoo.zoo_bytes() == 7 * MB  # no model yet: the runtime is on the ledger already
    await zoo.load("a")
    await zoo.load("b")
    assert calls == ["cpu"]  # once per device, not per model
    assert zoo.entry("a").measured == 20 * MB  # the model's own bytes only
    assert zoo.zoo_bytes() == 37 * MB
    await zoo.unload("a")
    assert zoo.zoo_bytes() == 17 * MB  # an unload gives back the model, not the runtime
    assert await zoo.prime_runtimes() == []
    await zoo.close()


async def test_without_a_start_the_first_load_sets_the_runtime_up_first() -> None:
    zoo = zoo_with(lambda device: Setup(5 * MB), [needing("a", 20 * MB)])
    await zoo.load("a")
    assert zoo.entry("a").measured == 20 * MB
    assert zoo.runtime_bytes() == 5 * MB
    await zoo.close()


async def test_a_runtime_that_fails_fails_its_models_not_the_others() -> None:
    def broken(device: str) -> Any:
        raise RuntimeError("no such provider")

    zoo = zoo_with(broken, [needing("a", 20 * MB), spec("plain", 10 * MB)])
    assert await zoo.prime_runtimes() == []
    with pytest.raises(ModelLoadError, match="no such provider"):
        await zoo.load("a")
    await zoo.load("plain")
    assert zoo.entry("plain").state is ModelState.LOADED
    assert zoo.runtime_bytes() == 0
    await zoo.close()


async def test_models_not_installed_set_up_nothing() -> None:
    missing = dataclasses.replace(spec("gone", MB), requires=(RUNTIME,), files=("absent.onnx",))
    zoo = zoo_with(lambda device: Setup(MB), [missing])
    assert await zoo.prime_runtimes() == []
    await zoo.close()


def test_the_onnxruntime_primer_runs_a_real_session_on_the_cpu() -> None:
    primed = PRIMERS["onnxruntime"]("cpu")
    (out,) = primed.run(None, {"x": np.full((1, 1, 4, 4), 2.0, dtype=np.float32)})
    assert out.shape == (1, 1, 4, 4) and float(out.max()) == 2.0


def test_the_allocator_is_pinned_on_glibc() -> None:
    assert steady_allocator() is True


async def test_a_loader_module_is_imported_on_its_own_line_once() -> None:
    """Importing the loader's module is a one-off cost too: booked apart from the model."""
    named = dataclasses.replace(spec("m", 3 * MB), loader="tests.addon_server.zoo.ballast:Ballast")
    zoo = zoo_with(lambda device: Setup(MB), [named])
    await zoo.load("m")
    await zoo.unload("m")
    await zoo.load("m")
    assert list(zoo.runtimes) == ["module tests.addon_server.zoo.ballast"]
    assert zoo.entry("m").measured == 3 * MB
    assert zoo.entry("m").loads == 2
    await zoo.close()


def test_every_vision_model_that_uses_opencv_sets_it_up_first() -> None:
    """OpenCV's first use (thread pool, buffers) is a runtime of its own, not a model's."""
    from addon_server.zoo.registry import Registry

    registry = Registry()
    for name in ("pose", "face_detector", "pet_classifier", "image_quality", "plate_reader"):
        assert "cv2" in registry[name].requires, name
    assert PRIMERS["cv2"]("cpu").__name__ == "cv2"
