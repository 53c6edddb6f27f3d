"""The one place that builds onnxruntime sessions (zoo models and the face embedder).

Builds an onnxruntime session on the CUDA provider when the device is ``cuda:N`` and the
provider exists, else on the CPU; model warnings (initialisers listed as graph inputs in
converted TF.js graphs) are silenced, errors still raise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort


def providers(device: str) -> list[Any]:
    """The execution providers for ``device``, most preferred first."""
    chosen: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = device.partition(":")[2] or "0"
        chosen.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    return chosen


def session(model: Path | bytes, device: str) -> ort.InferenceSession:
    """A session for ``model`` (a file, or a serialised ModelProto) on ``device``."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=providers(device))
