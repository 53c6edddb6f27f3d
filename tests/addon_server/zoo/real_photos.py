"""Real photos (BGR arrays) and a load-figure printer for the zoo model tests.

zidane.jpg and bus.jpg ship with the ultralytics wheel; astronaut and chelsea (a cat) with
scikit-image. Person boxes for zidane.jpg are what the add-on's detector gives on that photo.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, TypeVar

import cv2
import numpy as np
import psutil

from addon_server.detector.base import Detection
from addon_server.zoo.interface import Frame, LoadContext, ZooModel
from tests.addon_server.conftest import ASSETS

T = TypeVar("T")
ZIDANE_PERSONS = (
    Detection("person", 0.92, 726, 28, 431, 692),
    Detection("person", 0.70, 317, 203, 469, 517),
)
"""The embedded detector's two people in zidane.jpg (Zidane on the right, Ancelotti left)."""
BUS_PERSONS = (
    Detection("person", 0.97, 46, 407, 165, 486),
    Detection("person", 0.79, 684, 488, 126, 394),
    Detection("person", 0.71, 726, 532, 51, 300),
    Detection("person", 0.51, 218, 443, 171, 338),
)


@cache
def photo(name: str) -> np.ndarray:
    """A read-only BGR photo: ``zidane``/``bus`` (ultralytics) or a scikit-image sample."""
    if name in {"zidane", "bus"}:
        pixels = cv2.imread(str(ASSETS / f"{name}.jpg"))
    else:
        from skimage import data

        pixels = np.ascontiguousarray(getattr(data, name)()[:, :, ::-1])
    pixels.setflags(write=False)
    return pixels


def load_with_figures(build: Callable[[LoadContext], T], context: LoadContext) -> T:
    """Build and warm a model, printing its load time and RSS delta (figures, never asserted)."""
    process = psutil.Process()
    before = process.memory_info().rss
    start = time.perf_counter()
    model = build(context)
    loaded = time.perf_counter() - start
    model.warmup()  # type: ignore[attr-defined]
    delta = process.memory_info().rss - before
    name = getattr(build, "__name__", str(build))
    print(f"\n[load figures] {name}: load {loaded * 1000:.0f} ms, RSS +{delta / 2**20:.1f} MiB")
    return model


def same_answers(model: ZooModel, frames: Sequence[Frame], repeats: int = 3) -> list[Any]:
    """Each frame's ``as_json``, run ``repeats`` times from 4 threads at once; all agree.

    Returns the answers of the first round (in the order of ``frames``).
    """
    work = list(frames) * repeats
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda f: model.infer(f).as_json(), work))
    rounds = [answers[i : i + len(frames)] for i in range(0, len(work), len(frames))]
    assert all(r == rounds[0] for r in rounds), "concurrent calls disagreed"
    return rounds[0]
