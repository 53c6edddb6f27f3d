"""The one place that decodes, validates and annotates images.

Camera snapshots arrive from the network, so decoding is defensive: only JPEG, PNG and WebP are
accepted, the pixel count is checked from the header *before* any pixels are decoded (a
decompression bomb is refused without allocating it), and truncated or corrupt files are refused
rather than half-decoded. Pillow decodes (it reports formats and sizes without decoding); the
detectors receive a contiguous BGR ``uint8`` array, OpenCV's layout.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

CONTENT_TYPES = {
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
}
"""Declared content types we accept; ``application/octet-stream`` is sniffed instead."""

BGRImage = npt.NDArray[np.uint8]


def _sniff(data: bytes) -> type[ImageFile.ImageFile] | None:
    """Pick the Pillow decoder from the file's magic bytes (the declared type is not trusted).

    The decoder classes are used directly rather than ``Image.open``: Ultralytics replaces
    ``Image.open`` process-wide with a version that tries to pip-install a HEIF plugin on
    unknown input, which must never happen on a request path.
    """
    if data.startswith(b"\xff\xd8\xff"):
        return JpegImagePlugin.JpegImageFile
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PngImagePlugin.PngImageFile
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WebPImagePlugin.WebPImageFile
    return None


class ImageError(Exception):
    """An image was refused; ``code`` is the API error code, ``status`` the HTTP status."""

    code = "invalid_image"
    status = 400


class EmptyImageError(ImageError):
    code = "empty_body"


class UnsupportedImageTypeError(ImageError):
    code = "unsupported_media_type"
    status = 415


class ImageTooLargeError(ImageError):
    code = "image_too_large"
    status = 413


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """Decoded pixels plus what the caller needs to report about them.

    ``width``/``height`` are the image's own size; ``pixels`` may be smaller when the caller
    asked for a reduced decode (see :func:`decode`), and boxes found on them are scaled back
    with :meth:`to_original`.
    """

    pixels: BGRImage
    width: int
    height: int
    format: str

    @property
    def reduced(self) -> bool:
        return bool(self.pixels.shape[1] != self.width or self.pixels.shape[0] != self.height)

    def to_original(self) -> tuple[float, float]:
        """Factors mapping pixel coordinates of ``pixels`` to the original image."""
        return self.width / self.pixels.shape[1], self.height / self.pixels.shape[0]


def check_content_type(content_type: str | None) -> None:
    """Refuse declared types that are not images we decode (415) before reading the body."""
    if not content_type or content_type == "application/octet-stream":
        return
    if content_type.lower() not in CONTENT_TYPES:
        raise UnsupportedImageTypeError(
            f"unsupported content type {content_type!r}; send image/jpeg, image/png or image/webp"
        )


def decode(
    data: bytes, *, max_pixels: int, content_type: str | None = None, min_side: int | None = None
) -> DecodedImage:
    """Decode ``data`` into BGR pixels, refusing empty, corrupt, foreign and oversized images.

    With ``min_side``, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose longer
    side still reaches ``min_side``: a detector that letterboxes to 416 pixels gains nothing
    from a full 1080p decode, and the reduced decode costs a fraction of the time.
    """
    check_content_type(content_type)
    if not data:
        raise EmptyImageError("the image is empty (0 bytes)")
    decoder = _sniff(data)
    if decoder is None:
        raise ImageError("the body is not a JPEG, PNG or WebP image (unrecognised file signature)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = decoder(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{max_pixels} (decompression bomb protection)"
                )
            if min_side is not None and image.format == "JPEG":
                factor = min(1.0, min_side / max(width, height))
                image.draft("RGB", (math.ceil(width * factor), math.ceil(height * factor)))
            image.load()
            rgb = image.convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(f"image refused as a decompression bomb: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"the image is truncated or corrupt: {err}") from None
    pixels = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[:, :, ::-1])
    return DecodedImage(pixels, width, height, str(image.format))


def letterbox(
    pixels: BGRImage, size: int, pad_value: int = 114
) -> tuple[BGRImage, float, int, int]:
    """Resize keeping the aspect ratio and pad to ``size``×``size``.

    Returns the padded image, the scale applied and the left/top padding, so boxes can be
    mapped back to the original image.
    """
    height, width = pixels.shape[:2]
    scale = min(size / width, size / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    # INTER_AREA when shrinking: a 1080p frame resized to 416 with bilinear aliases badly.
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(pixels, (new_w, new_h), interpolation=interpolation)
    left, top = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.full((size, size, 3), pad_value, dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas, scale, left, top


@dataclass(frozen=True, slots=True)
class Box:
    """A labelled box to draw, in pixel coordinates of the image."""

    label: str
    x: int
    y: int
    width: int
    height: int


_PALETTE = ((56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207))


def annotate_jpeg(pixels: BGRImage, boxes: Iterable[Box], quality: int = 85) -> bytes:
    """Draw ``boxes`` with labels on a copy of ``pixels`` and return it as JPEG bytes."""
    canvas = pixels.copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 400))
    for index, box in enumerate(boxes):
        color = _PALETTE[index % len(_PALETTE)]
        top_left = (box.x, box.y)
        cv2.rectangle(canvas, top_left, (box.x + box.width, box.y + box.height), color, thickness)
        (tw, th), base = cv2.getTextSize(box.label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        label_y = max(th + base, box.y)
        cv2.rectangle(canvas, (box.x, label_y - th - base), (box.x + tw, label_y), color, -1)
        cv2.putText(
            canvas,
            box.label,
            (box.x, label_y - base),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("could not encode the annotated snapshot")
    return bytes(encoded.tobytes())
