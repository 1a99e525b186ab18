"""Inference preprocessing, exactly as the official ``ValTransform(legacy=False)``.

BGR uint8 image -> keep-ratio resize (``cv2.INTER_LINEAR``) to fit the input size -> pasted at the
top-left of a canvas filled with 114 -> CHW float32, values still 0-255 (no mean/std).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch

PAD_VALUE = 114


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as BGR uint8 ``[H, W, 3]``; raises ``ValueError`` naming a missing or corrupt file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
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
    h, w = input_size
    r = min(h / img.shape[0], w / img.shape[1])
    resized = cv2.resize(img, (int(img.shape[1] * r), int(img.shape[0] * r)), interpolation=cv2.INTER_LINEAR)
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
