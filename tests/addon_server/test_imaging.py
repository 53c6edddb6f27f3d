"""Decoding at a bounded working size and drawing snapshots on it (memory per request)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from addon_server.imaging import Box, annotate_jpeg, decode

LIMIT = 10**8


def _encode(image: Image.Image, file_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def zidane_rgb(zidane_jpg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(zidane_jpg)).convert("RGB"))


def test_a_large_png_is_decoded_at_the_working_size(
    zidane_4x_png: bytes, zidane_rgb: np.ndarray
) -> None:
    image = decode(zidane_4x_png, max_pixels=LIMIT, max_side=1280)
    assert (image.width, image.height) == (5120, 2880)  # what is reported: the upload's size
    assert image.pixels.shape == (720, 1280, 3)
    assert image.reduced and image.to_original() == (4.0, 4.0)
    # Area averaging of 4x4 repeated pixels gives the photo back exactly (BGR order).
    assert np.array_equal(image.pixels[:, :, ::-1], zidane_rgb)


def test_a_large_jpeg_is_decoded_reduced_to_the_working_size(zidane_rgb: np.ndarray) -> None:
    large = Image.fromarray(zidane_rgb).resize((5120, 2880), Image.Resampling.BICUBIC)
    image = decode(_encode(large, "JPEG", quality=90), max_pixels=LIMIT, max_side=1920)
    assert (image.width, image.height) == (5120, 2880)
    assert image.pixels.shape == (1080, 1920, 3)


def test_small_images_are_not_touched(zidane_jpg: bytes, zidane_rgb: np.ndarray) -> None:
    image = decode(zidane_jpg, max_pixels=LIMIT, max_side=1920)
    assert not image.reduced
    assert np.array_equal(image.pixels[:, :, ::-1], zidane_rgb)


def test_detection_decode_of_a_png_keeps_at_least_the_network_input(zidane_4x_png: bytes) -> None:
    image = decode(zidane_4x_png, max_pixels=LIMIT, min_side=416)
    assert 416 <= max(image.pixels.shape[:2]) < 2 * 416
    assert (image.width, image.height) == (5120, 2880)


@pytest.mark.parametrize("mode", ["P", "RGBA", "L"])
def test_other_png_modes_are_reduced_to_bgr(mode: str) -> None:
    """Palette, alpha and grey PNGs come out as BGR at the working size, colours kept."""
    array = np.zeros((400, 800, 3), np.uint8)
    array[:, :400] = (200, 40, 10)  # left half orange-red, right half black
    source = Image.fromarray(array).convert(mode)
    image = decode(_encode(source, "PNG"), max_pixels=LIMIT, max_side=200)
    assert image.pixels.shape == (100, 200, 3)
    # The colour as the source mode holds it (a palette dithers it), averaged over the area.
    expected = np.asarray(source.convert("RGB"))[:, :400].reshape(-1, 3).mean(axis=0)
    assert np.abs(image.pixels[50, 20].astype(float) - expected[::-1]).max() <= 6
    assert image.pixels[50, 180].max() <= 2


def test_the_snapshot_is_drawn_at_the_working_size(zidane_4x_png: bytes) -> None:
    """Boxes come in the upload's pixels and are drawn where they belong on the smaller image."""
    image = decode(zidane_4x_png, max_pixels=LIMIT, max_side=1280)
    snapshot = Image.open(io.BytesIO(annotate_jpeg(image, [Box("person", 400, 200, 800, 2000)])))
    assert snapshot.size == (1280, 720)
    drawn = np.asarray(snapshot.convert("RGB"), dtype=np.int16)
    plain = image.pixels[:, :, ::-1].astype(np.int16)
    # The left edge lies at x = 400 / 4 = 100 on the snapshot, from y = 50 to 550.
    assert np.abs(drawn[300, 100] - plain[300, 100]).sum() > 60
    assert np.abs(drawn[300, 130] - plain[300, 130]).sum() < 60
