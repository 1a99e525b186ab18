"""yolox_fast: the official YOLOX detector with fast, memory-lean custom ops.

Public API::

    from yolox_fast import SimOTAAssigner, postprocess, evaluate_coco, Detector
    from yolox_fast.models import build_yolox
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["AssignResult", "Detector", "SimOTAAssigner", "evaluate_coco", "postprocess", "__version__"]


def __getattr__(name: str):
    # Everything is imported when first asked for: ``python -m yolox_fast.train`` runs this file first, and
    # torch must not load before the command has set its OpenMP wait policy (yolox_fast/cli.py).
    if name in ("AssignResult", "SimOTAAssigner"):
        from .models import assigner

        return getattr(assigner, name)
    if name == "postprocess":
        from .ops.postprocess import postprocess

        return postprocess
    # evaluate_coco pulls in OpenCV and pycocotools: import them only when asked for.
    if name == "evaluate_coco":
        from .evaluation.coco import evaluate_coco

        return evaluate_coco
    if name == "Detector":
        from .inference.detector import Detector

        return Detector
    raise AttributeError(f"module 'yolox_fast' has no attribute {name!r}")
