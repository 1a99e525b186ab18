"""Inference preprocessing, exactly as the official ``ValTransform(legacy=False)``.

BGR uint8 image -> keep-ratio resize (``cv2.INTER_LINEAR``) to fit the input size -> pasted at the
top-left of a canvas filled with 114 -> CHW float32, values still 0-255 (no mean/std).

:func:`read_image` is the one place image files are read; it refuses truncated JPEG and PNG files.
"""

from __future__ import annotations

import os
import re

import cv2
import numpy as np
import torch

PAD_VALUE = 114

#: File name suffixes (lower case) taken as images wherever files are listed: dataset folders and prediction
#: inputs (folders, globs). All are formats OpenCV decodes.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


#: File signatures of the formats whose completeness :func:`image_file_problem` checks.
_JPEG_SOI = b"\xff\xd8"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The next marker after a JPEG scan's entropy-coded data: 0xFF followed by anything but a stuffed 0x00
#: or a restart marker RST0-7 (which live inside the scan).
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def _jpeg_truncated(data: bytes) -> bool | None:
    """Whether a JPEG stream ends before its end-of-image marker (FF D9).

    Walks the marker segments and skips each scan's entropy-coded data (where 0xFF is always followed
    by a stuffed 0x00 or a restart marker), so an EXIF thumbnail's EOI or bytes appended after the real
    EOI (phone trailers) do not fool it. None when the structure is not one it understands (let the
    decoder judge).
    """
    pos, n = 2, len(data)
    while pos < n:
        if data[pos] != 0xFF:
            return None
        while pos < n and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= n:
            return True
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return False
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers: no length
            continue
        if pos + 2 > n:
            return True
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            return None
        pos += length
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            found = _JPEG_NEXT_MARKER.search(data, pos)
            if found is None:
                return True
            pos = found.start()
    return True


def _png_truncated(data: bytes) -> bool:
    """Whether a PNG stream ends before the end of its IEND chunk."""
    pos, n = len(_PNG_SIGNATURE), len(data)
    while pos + 8 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunk = data[pos + 4 : pos + 8]
        pos += 12 + length  # length, type, data, CRC
        if chunk == b"IEND":
            return pos > n
    return True


def image_file_problem(data: bytes) -> str | None:
    """Why the bytes of an image file cannot be a whole image, or None when nothing is known to be wrong.

    Checks what decoders let through silently: an empty file, and JPEG and PNG files that end early
    (libjpeg fills the missing part with grey and only prints "Premature end of JPEG file"). Other
    problems are left to the decoder.
    """
    if not data:
        return "empty file"
    if data.startswith(_JPEG_SOI) and _jpeg_truncated(data):
        return "truncated JPEG (the file ends before its end-of-image marker)"
    if data.startswith(_PNG_SIGNATURE) and _png_truncated(data):
        return "truncated PNG (the file ends before its IEND chunk)"
    return None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as BGR uint8 ``[H, W, 3]`` (EXIF orientation applied, as ``cv2.imread``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it is
    truncated (:func:`image_file_problem`) or cannot be decoded.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    problem = image_file_problem(data)
    if problem:
        raise ValueError(f"cannot use image {path}: {problem}")
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode image {path} (corrupt or not an image)")
    return img


def letterbox(img: np.ndarray, input_size: tuple[int, int], pad_value: int = PAD_VALUE) -> tuple[np.ndarray, float]:
    """Keep-ratio resize of ``img [H, W, 3]`` uint8 into ``input_size = (h, w)``, pasted top-left.

    Returns the ``[h, w, 3]`` uint8 canvas and the scale ``r``: a box in the original image is the
    network box divided by ``r``.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"the image is empty ({img.shape[1]}x{img.shape[0]} pixels); nothing to detect on")
    h, w = input_size
    r = min(h / img.shape[0], w / img.shape[1])
    # As the official resize (truncation), but never to 0 pixels: a 2000x1 strip becomes 416x1, not 416x0.
    size = (max(int(img.shape[1] * r), 1), max(int(img.shape[0] * r), 1))
    resized = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    canvas = np.full((h, w, 3), pad_value, dtype=np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas, r


def preprocess(img: np.ndarray, input_size: tuple[int, int] | int) -> tuple[torch.Tensor, float]:
    """One BGR image -> ``([3, h, w]`` float32 network input, ratio ``r``).

    Divide predicted boxes by ``r`` to map them back onto ``img``.
    """
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    canvas, r = letterbox(img, input_size)
    return torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32)), r
