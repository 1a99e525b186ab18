"""Inference library: :class:`Detector` (PyTorch or ONNX Runtime), its :class:`Detections`, the model runner that
prediction and evaluation share (:mod:`.runner`), drawing and input sources (images, folders, globs, videos,
cameras)."""

from .detector import Detector
from .results import Detections
from .runner import DetectSettings, OnnxRunner, TorchRunner

__all__ = ["DetectSettings", "Detector", "Detections", "OnnxRunner", "TorchRunner"]
