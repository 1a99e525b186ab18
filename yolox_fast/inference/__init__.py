"""Inference library: :class:`Detector` (PyTorch or ONNX Runtime), its :class:`Detections`, drawing and input sources
(images, folders, globs, videos, cameras)."""

from .detector import Detector
from .results import Detections

__all__ = ["Detector", "Detections"]
