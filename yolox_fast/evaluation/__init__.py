"""Evaluation: COCO box AP with pycocotools (:func:`evaluate_coco`, :class:`COCOEvaluator`)."""

from .coco import COCOEvaluator, coco_results, evaluate_coco, format_per_class_table, load_coco

__all__ = ["COCOEvaluator", "coco_results", "evaluate_coco", "format_per_class_table", "load_coco"]
