"""Data: reading images, preprocessing, datasets and augmentation."""

from .preprocess import letterbox, preprocess, read_image

__all__ = ["letterbox", "preprocess", "read_image"]
