"""The one place that decodes, validates and annotates images.

Camera snapshots arrive from the network, so decoding is defensive: only JPEG, PNG and WebP are
accepted, the pixel count is checked from the header *before* any pixels are decoded (a
decompression bomb is refused without allocating it), and truncated or corrupt files are refused
rather than half-decoded. Pillow decodes (it reports formats and sizes without decoding); the
detectors receive a contiguous BGR ``uint8`` array, OpenCV's layout.

Memory is bounded by decoding *reduced*: the stages never need a camera's full 36 Mpx, so the
caller names the size it works at and the full-size pixels live only as long as the decode
itself. A JPEG is decoded at a DCT scale (1/2 … 1/8) and never exists at full size; a PNG or
WebP cannot be decoded reduced by Pillow, so it is shrunk right after decoding and the full-size
image released before any further copy (RGB → BGR, face search, drawing) is made.
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
from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin, WebPImagePlugin, _imaging

CONTENT_TYPES = {
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
}
"""Declared content types we accept; ``application/octet-stream`` is sniffed instead."""

BGRImage = npt.NDArray[np.uint8]

PILLOW_BLOCK_BYTES = 512 * 1024 * 1024
"""Pillow allocates an image in blocks of at most this size (its default is 16 MiB).

With 16 MiB blocks a 36 Mpx decode is nine blocks that glibc, once it has raised its mmap
threshold, serves from the decoding thread's heap arena and keeps there after they are freed:
four concurrent 6000x6000 analyses left 480-560 MB above idle. A block as large as any image we
accept (``images.max_pixels`` x 4 bytes) is one allocation above glibc's largest mmap threshold
(32 MiB), which goes back to the system the moment the image is freed (about 320 MB measured).
Blocks are sized to the image, so small images do not grow.
"""
_imaging.set_block_size(PILLOW_BLOCK_BYTES)


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


_SHRINKABLE = frozenset({"L", "RGB"})
"""Modes Pillow shrinks as they are; others (palette, alpha, 16-bit) become RGB first."""


def decode(
    data: bytes,
    *,
    max_pixels: int,
    content_type: str | None = None,
    min_side: int | None = None,
    max_side: int | None = None,
) -> DecodedImage:
    """Decode ``data`` into BGR pixels, refusing empty, corrupt, foreign and oversized images.

    With ``min_side``, the pixels are the smallest reduction whose longer side still reaches
    ``min_side`` (a JPEG's DCT scale 1/2, 1/4, 1/8; otherwise a whole-number box reduction): a
    detector that letterboxes to 416 pixels gains nothing from a full 1080p decode, and the
    reduced decode costs a fraction of the time. With ``max_side``, the longer side is at most
    ``max_side`` (the analysis' working size). ``width``/``height`` stay the original's.
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
            image: Image.Image = decoder(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{max_pixels} (decompression bomb protection)"
                )
            file_format = str(image.format)
            target = min_side if min_side is not None else max_side
            if target is not None and file_format == "JPEG":
                factor = min(1.0, target / max(width, height))
                image.draft("RGB", (math.ceil(width * factor), math.ceil(height * factor)))
            image.load()
            # Rebinding ``image`` drops the full-size decode as soon as the reduced one exists.
            image = _shrink(image, min_side, max_side)
            rgb = image.convert("RGB") if image.mode != "RGB" else image
            del image
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(f"image refused as a decompression bomb: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"the image is truncated or corrupt: {err}") from None
    pixels = np.asarray(cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR), dtype=np.uint8)
    return DecodedImage(pixels, width, height, file_format)


def _shrink(image: Image.Image, min_side: int | None, max_side: int | None) -> Image.Image:
    """``image`` reduced as :func:`decode` documents, or ``image`` itself when already small."""
    long_side = max(image.size)
    if max_side is not None and long_side > max_side:
        scale = max_side / long_side
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        # BOX is area averaging (OpenCV's INTER_AREA); reducing_gap=1 first box-reduces by the
        # whole-number part of the factor, so no full-height intermediate is allocated.
        return _shrinkable(image).resize(size, Image.Resampling.BOX, reducing_gap=1.0)
    if min_side is not None and long_side >= 2 * min_side:
        return _shrinkable(image).reduce(long_side // min_side)
    return image


def _shrinkable(image: Image.Image) -> Image.Image:
    return image if image.mode in _SHRINKABLE else image.convert("RGB")


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


BLUR_CELLS = 8
"""A blurred region keeps at most this many cells across its longer side: a face 8 cells wide
has no eyes, nose or mouth left to recognise, while the snapshot still shows where a head was."""


def obscure(canvas: BGRImage, box: Box) -> None:
    """Pixelate and then blur ``box`` of ``canvas`` in place (clipped to the image).

    Pixelation throws the detail away (a Gaussian blur alone can be partly undone by
    deconvolution); the blur over it hides the cell edges, so the region reads as "blurred"
    rather than as a mosaic that draws the eye.
    """
    height, width = canvas.shape[:2]
    x1, y1 = max(0, box.x), max(0, box.y)
    x2, y2 = min(width, box.x + box.width), min(height, box.y + box.height)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return
    region = canvas[y1:y2, x1:x2]
    w, h = x2 - x1, y2 - y1
    cell = max(w, h) / BLUR_CELLS
    small = cv2.resize(
        region,
        (max(1, round(w / cell)), max(1, round(h / cell))),
        interpolation=cv2.INTER_AREA,
    )
    coarse = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    region[:] = cv2.GaussianBlur(coarse, (0, 0), sigmaX=max(1.0, cell / 2))


def _on_canvas(box: Box, sx: float, sy: float) -> Box:
    """``box`` (in the original image's pixels) in the decoded pixels' coordinates."""
    return Box(
        box.label,
        round(box.x / sx),
        round(box.y / sy),
        round(box.width / sx),
        round(box.height / sy),
    )


def annotate_jpeg(
    image: DecodedImage, boxes: Iterable[Box], blur: Iterable[Box] = (), quality: int = 85
) -> bytes:
    """Draw ``boxes`` with labels on a copy of ``image.pixels`` and return it as JPEG bytes.

    Boxes are in the original image's pixels (as every result is reported); the snapshot has the
    decoded pixels' size, so after a reduced decode the boxes are scaled onto it and a 36 Mpx
    upload is stored at the analysis' working size rather than copied at full size to draw on.
    The ``blur`` regions (faces that must not be kept, see :mod:`addon_server.privacy`) are
    obscured on the copy before anything is drawn or encoded.
    """
    canvas = image.pixels.copy()
    sx, sy = image.to_original()
    for region in blur:
        obscure(canvas, _on_canvas(region, sx, sy))
    thickness = max(1, round(min(canvas.shape[:2]) / 400))
    for index, original in enumerate(boxes):
        box = _on_canvas(original, sx, sy)
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
