"""Runtimes a model family sets up once per process, measured and booked on their own.

The first onnxruntime session in a process builds the runtime's global state (environment,
kernel registry, CPU allocator) that outlives every session: measured here, 13 MB that the
first model loaded was charged and no later load of it was (pose: 44 MB first, 31 MB after).
The manager therefore "primes" each runtime its installed models need before it measures any
of them, books what that took as the runtime's own line in the ledger, and from then on every
model's measurement is its own (benchmarks/zoo.py G2).

A primer does the smallest real thing that makes the runtime ready on the device and returns a
handle the manager keeps for the life of the process; importing a library is the runtime's
cost too (transformers' import alone is ~240 MB of resident memory here).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np


def _onnxruntime(device: str) -> Any:
    """One tiny session (a 1x1 convolution) run once on ``device``'s provider."""
    from onnx import TensorProto, helper, numpy_helper

    from addon_server.zoo.models.onnx import session

    weight = numpy_helper.from_array(np.ones((1, 1, 1, 1), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "vigil-runtime-primer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    primed = session(model.SerializeToString(), device)
    primed.run(None, {"x": np.zeros((1, 1, 4, 4), dtype=np.float32)})
    return primed


def _opencv(device: str) -> Any:
    """OpenCV's first resize, colour conversion and filters on a 720p frame: its thread pool
    and buffers (3 MB here, which image_quality's first load was charged and no later one)."""
    import cv2

    frame = np.zeros((720, 1280, 3), dtype=np.uint8)
    small = cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    cv2.Laplacian(grey, cv2.CV_64F)
    cv2.filter2D(grey.astype(np.float32), -1, np.ones((3, 3), dtype=np.float32))
    return cv2


def _importer(module: str) -> Callable[[str], Any]:
    def prime(device: str) -> Any:
        return importlib.import_module(module)

    return prime


PRIMERS: Mapping[str, Callable[[str], Any]] = MappingProxyType(
    {
        "onnxruntime": _onnxruntime,
        "cv2": _opencv,
        "transformers": _importer("transformers"),
        "ultralytics": _importer("ultralytics"),
    }
)
"""Runtime (a name in a spec's ``requires``) → its primer, called on the device's loader thread."""
