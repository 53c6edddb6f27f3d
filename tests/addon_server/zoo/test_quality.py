"""Image quality: degraded copies of real photos score worse and carry the right flags."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.quality import ImageQuality
from tests.addon_server.zoo.real_photos import load_with_figures, photo, same_answers

PHOTOS = ("zidane", "bus", "astronaut", "chelsea", "coffee")


@pytest.fixture(scope="module")
def quality(tmp_path_factory: pytest.TempPathFactory) -> ImageQuality:
    context = LoadContext(models_dir=tmp_path_factory.mktemp("models"), device="cpu")
    return load_with_figures(ImageQuality, context)


def _blurred(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.GaussianBlur(pixels, (0, 0), 3))


def _darkened(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) * 0.2).astype(np.uint8)


def _noisy(pixels: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(0).normal(0, 25, pixels.shape)
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", PHOTOS)
def test_the_original_photos_are_unflagged(quality: ImageQuality, name: str) -> None:
    result = quality.infer(Frame(photo(name)))
    assert result.flags == ()
    assert result.context_lines() == []
    assert result.score >= 70


@pytest.mark.parametrize("name", PHOTOS)
def test_a_blurred_copy_scores_worse_and_is_blurry(quality: ImageQuality, name: str) -> None:
    original = quality.infer(Frame(photo(name)))
    blurred = quality.infer(Frame(_blurred(photo(name))))
    assert blurred.score < original.score
    assert blurred.blurry
    assert not blurred.too_dark
    assert "blurry" in blurred.context_lines()[0]


@pytest.mark.parametrize("name", PHOTOS)
def test_a_darkened_copy_is_too_dark_not_blurry(quality: ImageQuality, name: str) -> None:
    original = quality.infer(Frame(photo(name)))
    dark = quality.infer(Frame(_darkened(photo(name))))
    assert dark.score < original.score
    assert dark.too_dark
    assert not dark.blurry  # sharpness is normalised by contrast
    assert dark.brightness < original.brightness / 3


def test_added_noise_is_flagged(quality: ImageQuality) -> None:
    clean = quality.infer(Frame(photo("chelsea")))
    noisy = quality.infer(Frame(_noisy(photo("chelsea"))))
    assert "noisy" in noisy.flags
    assert noisy.noise_sigma > 3 * clean.noise_sigma
    assert noisy.score < clean.score


def test_a_blank_white_frame_is_overexposed_and_featureless(quality: ImageQuality) -> None:
    result = quality.infer(Frame(np.full((480, 640, 3), 255, dtype=np.uint8)))
    assert {"overexposed", "low contrast", "blurry"} <= set(result.flags)
    assert result.score <= 20  # only the noise term (none) scores


def test_json_is_plain_and_brisque_says_why_it_is_absent(quality: ImageQuality) -> None:
    body = quality.infer(Frame(photo("bus"))).as_json()
    assert body["flags"] == []
    assert isinstance(body["score"], int)
    assert all(isinstance(v, (int, float, str, list, type(None))) for v in body.values())
    if not hasattr(cv2, "quality"):  # opencv-python-headless: no contrib module
        assert body["brisque"] is None
        assert "quality module" in body["brisque_unavailable"]


def test_brisque_files_configured_but_unusable_still_measure(tmp_path: Path) -> None:
    options = {"brisque_model": "brisque_model_live.yml", "brisque_range": "range.yml"}
    model = ImageQuality(LoadContext(models_dir=tmp_path, device="cpu", options=options))
    result = model.infer(Frame(photo("coffee")))
    assert result.brisque is None
    assert result.flags == ()
    reason = result.brisque_unavailable or ""
    if hasattr(cv2, "quality"):
        assert str(tmp_path / "brisque_model_live.yml") in reason
    else:
        assert "quality module" in reason


def test_concurrent_calls_give_the_same_answers(quality: ImageQuality) -> None:
    answers = same_answers(quality, [Frame(photo(n)) for n in PHOTOS])
    assert answers[0] == quality.infer(Frame(photo(PHOTOS[0]))).as_json()


def test_a_tiny_or_grey_frame_is_measured_without_error(quality: ImageQuality) -> None:
    assert quality.infer(Frame(np.zeros((2, 2, 3), dtype=np.uint8))).too_dark
    quality.warmup()
    quality.close()
