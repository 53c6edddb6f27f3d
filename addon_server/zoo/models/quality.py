"""Blind image quality from OpenCV and numpy: is this frame good enough to trust?

A dark, blurred or noisy snapshot makes every other model less sure (a face the detector missed,
a plate it cannot read), so the rules and the language model are told when the camera's picture
itself is the problem. No learned weights: each figure is a classic no-reference measure,
computed on the grey frame reduced to at most :data:`ANALYSED_SIDE` pixels so the figures and
thresholds mean the same for every camera resolution.

- **Sharpness**: the variance of the Laplacian (the usual focus measure), divided by the grey
  variance. Dividing makes it independent of exposure: darkening a photo to a fifth lowers the
  Laplacian variance 25-fold but leaves the ratio unchanged, so a dark frame is reported dark,
  not blurry. On the test photos the originals measure 0.15–0.63 and a Gaussian blur of σ = 2 px
  0.002–0.02, hence the 0.04 threshold.
- **Noise**: Immerkær's fast estimate of the Gaussian noise σ (one 3x3 high-pass kernel that
  cancels linear image structure). The originals measure 1.3–4.7, the same with σ = 15 noise
  added 5–11.5.
- **Exposure**: mean brightness and the fractions of clipped shadows and highlights.
- **BRISQUE**: only where OpenCV's contrib ``quality`` module is present *and* its two model
  files are supplied. opencv-python-headless (what the add-on installs) has no ``cv2.quality``,
  so ``brisque`` is normally ``None`` and ``brisque_unavailable`` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from addon_server.imaging import BGRImage
from addon_server.zoo.interface import Frame, LoadContext

ANALYSED_SIDE = 640
BLURRY_BELOW = 0.04
"""Laplacian variance over grey variance: sharp photos 0.15–0.63, σ = 2 px blur ≤ 0.02."""
NOISY_ABOVE = 6.0
DARK_MEAN_BELOW = 40.0
BRIGHT_MEAN_ABOVE = 215.0
CLIPPED_FRACTION = 0.25
LOW_CONTRAST_BELOW = 15.0
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


@dataclass(frozen=True, slots=True)
class QualityResult:
    """Figures for one frame; ``flags`` are what the rules and the language model act on."""

    score: int
    """0 (useless) to 100 (sharp, clean, well exposed): a weighted sum of the three terms."""
    sharpness: float
    blur_variance: float
    noise_sigma: float
    brightness: float
    contrast: float
    dark_fraction: float
    bright_fraction: float
    flags: tuple[str, ...]
    brisque: float | None = None
    brisque_unavailable: str | None = None

    @property
    def too_dark(self) -> bool:
        return "too dark" in self.flags

    @property
    def blurry(self) -> bool:
        return "blurry" in self.flags

    def as_json(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "sharpness": round(self.sharpness, 4),
            "blur_variance": round(self.blur_variance, 1),
            "noise_sigma": round(self.noise_sigma, 2),
            "brightness": round(self.brightness, 1),
            "contrast": round(self.contrast, 1),
            "dark_fraction": round(self.dark_fraction, 3),
            "bright_fraction": round(self.bright_fraction, 3),
            "flags": list(self.flags),
            "brisque": None if self.brisque is None else round(self.brisque, 2),
            "brisque_unavailable": self.brisque_unavailable,
        }

    def context_lines(self) -> list[str]:
        if not self.flags:
            return []
        return [
            f"Image quality: {', '.join(self.flags)} (score {self.score}/100); "
            "details in this frame may be unreliable"
        ]


def _reduced_grey(pixels: BGRImage) -> np.ndarray:
    height, width = pixels.shape[:2]
    scale = min(1.0, ANALYSED_SIDE / max(height, width, 1))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = np.asarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA))
    if pixels.ndim == 2:
        return pixels
    return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY))


def _noise_sigma(grey: np.ndarray) -> float:
    """Immerkær (1996): σ ≈ √(π/2) · Σ|I ∗ N| / (6 (W−2)(H−2))."""
    height, width = int(grey.shape[0]), int(grey.shape[1])
    if height < 3 or width < 3:
        return 0.0
    response = cv2.filter2D(grey.astype(np.float32), -1, _NOISE_KERNEL)[1:-1, 1:-1]
    total = float(np.abs(response).sum())
    return math.sqrt(math.pi / 2) * total / (6.0 * (width - 2) * (height - 2))


def _ramp(value: float, bad: float, good: float) -> float:
    """0 at ``bad``, 1 at ``good``, linear between (either order)."""
    if bad == good:
        return 1.0
    return min(1.0, max(0.0, (value - bad) / (good - bad)))


class ImageQuality:
    """The quality figures of whole frames (no weights; nothing to install)."""

    def __init__(self, context: LoadContext) -> None:
        self._brisque_files: tuple[str, str] | None = None
        self.brisque_unavailable: str | None = None
        model, ranges = context.options.get("brisque_model"), context.options.get("brisque_range")
        if not hasattr(cv2, "quality"):
            self.brisque_unavailable = (
                "OpenCV's contrib quality module is absent (opencv-python-headless has none)"
            )
        elif not (model and ranges):
            self.brisque_unavailable = "no BRISQUE model/range files configured"
        else:
            paths = (context.path(str(model)), context.path(str(ranges)))
            absent = [str(p) for p in paths if not p.is_file()]
            if absent:
                self.brisque_unavailable = f"BRISQUE files missing: {', '.join(absent)}"
            else:
                self._brisque_files = (str(paths[0]), str(paths[1]))

    def infer(self, frame: Frame) -> QualityResult:
        return self.measure(frame.pixels)

    def measure(self, pixels: BGRImage) -> QualityResult:
        grey = _reduced_grey(pixels)
        grey_f = grey.astype(np.float64)
        contrast = float(grey_f.std())
        blur_variance = float(cv2.Laplacian(grey, cv2.CV_64F).var())
        sharpness = blur_variance / max(contrast * contrast, 1.0)
        noise = _noise_sigma(grey)
        brightness = float(grey_f.mean())
        dark = float(np.mean(grey <= 8))
        bright = float(np.mean(grey >= 247))

        flags = []
        if brightness < DARK_MEAN_BELOW or dark > 2 * CLIPPED_FRACTION:
            flags.append("too dark")
        if brightness > BRIGHT_MEAN_ABOVE or bright > CLIPPED_FRACTION:
            flags.append("overexposed")
        if contrast < LOW_CONTRAST_BELOW:
            flags.append("low contrast")
        if sharpness < BLURRY_BELOW:
            flags.append("blurry")
        if noise > NOISY_ABOVE:
            flags.append("noisy")

        # Sharpness on a log scale (it spans two decades); exposure from the mean's distance to
        # either end and the clipped share; noise from σ 3 (clean) to 15 (very grainy).
        sharp_term = _ramp(math.log10(max(sharpness, 1e-6)), math.log10(0.004), math.log10(0.1))
        exposure_term = min(_ramp(brightness, 10, 60), _ramp(brightness, 245, 195))
        exposure_term *= 1.0 - _ramp(dark + bright, 0.1, 0.6)
        noise_term = _ramp(noise, 15.0, 3.0)
        score = round(100 * (0.5 * sharp_term + 0.3 * exposure_term + 0.2 * noise_term))

        brisque = None
        if self._brisque_files is not None:
            model, ranges = self._brisque_files
            values = cv2.quality.QualityBRISQUE_compute(pixels, model, ranges)  # type: ignore[attr-defined]
            brisque = float(values[0])
        return QualityResult(
            score=score,
            sharpness=sharpness,
            blur_variance=blur_variance,
            noise_sigma=noise,
            brightness=brightness,
            contrast=contrast,
            dark_fraction=dark,
            bright_fraction=bright,
            flags=tuple(flags),
            brisque=brisque,
            brisque_unavailable=self.brisque_unavailable,
        )

    def warmup(self) -> None:
        self.measure(np.zeros((360, 640, 3), dtype=np.uint8))

    def close(self) -> None:
        self._brisque_files = None
