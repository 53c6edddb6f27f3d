"""The Haar face finder: the configured pyramid step is the one searched, at a bounded size."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from addon_server.reid.faces import FaceBox, HaarFaceFinder


def _bgr(jpeg: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.parametrize("step", [1.5, 1.2])
def test_faces_are_searched_at_the_configured_scale_step(
    bus_jpg: bytes, zidane_jpg: bytes, step: float
) -> None:
    """Every raw cascade hit is the base window times a power of ``scale_step``.

    With grouping off (``min_neighbors=0``) OpenCV reports each hit at the window size of the
    pyramid level it came from: ``round(window * step**k)``. A finder that searched with
    OpenCV's usual 1.1 instead (as 47a7af0 did, storing the step but not using it) reports
    widths such as 32, 39, 43 … that no power of 1.5 gives.
    """
    for image in (_bgr(bus_jpg), _bgr(zidane_jpg)):
        finder = HaarFaceFinder(max_side=max(image.shape), min_neighbors=0, scale_step=step)
        base = finder.window[0]
        levels = {round(base * step**k) for k in range(40)}
        hits = finder.find(image)
        assert hits, "the photos have faces, so the cascade has raw hits"
        assert {hit.width for hit in hits} <= levels


def test_the_default_step_is_the_measured_one() -> None:
    assert HaarFaceFinder(max_side=1920).scale_step == 1.2  # 47a7af0: same faces, ~43 % faster


@pytest.mark.parametrize("name", ["bus_jpg", "zidane_jpg"])
def test_a_large_frame_is_searched_at_the_bounded_size(
    request: pytest.FixtureRequest, name: str
) -> None:
    """A 4x frame searched at the original's size finds the original's faces, scaled back.

    The frame is the photo enlarged 4x by pixel repetition, and the bound is the photo's own
    size, so the reduced image the cascade sees is the photo itself: the same faces must come
    back, in the large frame's coordinates.
    """
    photo = _bgr(request.getfixturevalue(name))
    height, width = photo.shape[:2]
    expected = HaarFaceFinder(max_side=max(width, height)).find(photo)
    assert expected, f"{name} has faces"
    large = cv2.resize(photo, (width * 4, height * 4), interpolation=cv2.INTER_NEAREST)
    found = HaarFaceFinder(max_side=max(width, height)).find(large)
    assert found == [box.scaled(4, 4, width * 4, height * 4) for box in expected]


def test_scaled_boxes_stay_inside_the_image() -> None:
    box = FaceBox(10, 20, 30, 40).scaled(1.5, 1.5, 55, 80)
    assert box == FaceBox(15, 30, 40, 50)
    assert box.x + box.width <= 55 and box.y + box.height <= 80
    assert math.isclose(FaceBox(3, 3, 3, 3).scaled(2, 2, 100, 100).width, 6)
