"""Evaluation: COCO box AP with pycocotools (:func:`evaluate_coco`, :class:`COCOEvaluator`), the validation
report (per-class table, curves, confusion matrix) and its plots.

The names below load ``coco`` (and so pycocotools) on first use only: the trainer draws its training batches
with ``evaluation.plots``, and must import on a machine without pycocotools (the GPU image has none).
"""

from __future__ import annotations

import importlib

__all__ = ["COCOEvaluator", "coco_results", "evaluate_coco", "format_per_class_table", "load_coco"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(".coco", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
