"""Per-class validation figures from detections and ground truth, on pycocotools' own matching.

Input: a COCO ground truth (``pycocotools.coco.COCO``) and COCO results ``[{"image_id", "category_id",
"bbox": [x, y, w, h], "score"}]``. pycocotools' ``COCOeval(iouType="bbox")`` is run over the given image
ids; everything here is read from it, so the AP columns are pycocotools' numbers:

- ``ap[k]`` (AP50:95) and ``ap50[k]``: the mean of ``eval["precision"][t, :, k, area all, 100 dets]`` over the
  IoU thresholds ``t`` (only ``t`` = 0.5 for AP50), -1 entries left out, exactly as ``COCOeval.summarize``
  averages them; their mean over the classes with ground truth is the headline AP;
- ``images[k]`` / ``instances[k]``: images holding the class / its ground-truth boxes (crowd boxes are
  pycocotools' ignore regions, not instances);
- the precision/recall/F1 against confidence curves: each class's detections (those COCOeval keeps: the 100
  best per image) sorted by score, a detection true when COCOeval matched it at IoU 0.5;
- ``precision[k]`` / ``recall[k]``: those curves at the one confidence that maximises the mean F1 over the
  classes (ultralytics' rule for its P and R columns).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Confidence grid of the curves (ultralytics uses the same 1000 points).
CONFIDENCES = np.linspace(0.0, 1.0, 1000)


@dataclass
class ClassMetrics:
    """Per-class figures over C classes (NaN for a class without ground truth, except the counts).

    Attributes:
        names: ``[C]`` class names.
        images, instances: ``[C]`` int: images holding the class, its ground-truth boxes.
        precision, recall: ``[C]`` at :attr:`confidence`.
        ap50, ap: ``[C]`` pycocotools' per-class AP at IoU 0.5 and AP50:95.
        confidence: the score threshold of ``precision`` and ``recall`` (max mean F1).
        conf_grid: ``[K]`` confidences of the curves; ``p_curve``, ``r_curve``, ``f1_curve``: ``[C, K]``.
        recall_points: ``[R]`` pycocotools' 101 recall points; ``pr_curve``: ``[C, R]`` its interpolated precision
            at IoU 0.5 (the curve AP50 is the mean of).
        num_images: images evaluated.
    """

    names: list[str]
    images: np.ndarray
    instances: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    ap50: np.ndarray
    ap: np.ndarray
    confidence: float
    conf_grid: np.ndarray
    p_curve: np.ndarray
    r_curve: np.ndarray
    f1_curve: np.ndarray
    recall_points: np.ndarray
    pr_curve: np.ndarray
    num_images: int

    @property
    def present(self) -> np.ndarray:
        """``[C]`` bool: classes with ground truth in the evaluated images."""
        return self.instances > 0

    def mean(self, values: np.ndarray) -> float:
        """Mean of a ``[C]`` column over the classes with ground truth (NaN when there are none)."""
        return float(np.mean(values[self.present])) if self.present.any() else float("nan")

    def rows(self) -> list[dict]:
        """The table: an ``all`` row, then one row per class with ground truth, as dicts of
        ``class, images, instances, precision, recall, AP50, AP50-95``."""
        rows = [{"class": "all", "images": self.num_images, "instances": int(self.instances.sum()),
                 "precision": self.mean(self.precision), "recall": self.mean(self.recall),
                 "AP50": self.mean(self.ap50), "AP50-95": self.mean(self.ap)}]
        for k in np.flatnonzero(self.present):
            rows.append({"class": self.names[k], "images": int(self.images[k]), "instances": int(self.instances[k]),
                         "precision": float(self.precision[k]), "recall": float(self.recall[k]),
                         "AP50": float(self.ap50[k]), "AP50-95": float(self.ap[k])})
        return rows

    def table(self) -> str:
        """:meth:`rows` as aligned text (figures as fractions with 3 digits, as ultralytics prints them)."""
        rows = self.rows()
        width = max(len("class"), *(len(r["class"]) for r in rows))
        head = f"{'class':>{width}} {'images':>7} {'instances':>9} {'P':>6} {'R':>6} {'AP50':>6} {'AP50-95':>8}"
        lines = [head]
        for r in rows:
            lines.append(f"{r['class']:>{width}} {r['images']:>7} {r['instances']:>9} {r['precision']:>6.3f} "
                         f"{r['recall']:>6.3f} {r['AP50']:>6.3f} {r['AP50-95']:>8.3f}")
        return "\n".join(lines)


def run_cocoeval(coco_gt, detections: Sequence[Mapping], image_ids: Sequence[int]):
    """pycocotools' ``COCOeval(iouType="bbox")`` over ``image_ids``, evaluated and accumulated (quietly)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        if detections:
            coco_dt = coco_gt.loadRes([dict(d) for d in detections])  # loadRes adds keys: hand it copies
        else:  # loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                               "categories": list(coco_gt.dataset["categories"]), "annotations": []}
            coco_dt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        coco_eval.params.imgIds = list(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def mean_valid(values: np.ndarray) -> float:
    """Mean of the entries > -1 (pycocotools' "no ground truth" marker); NaN when none is."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else float("nan")


def _matched_at_iou50(coco_eval, num_classes: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per class: detection scores ``[D]`` and whether COCOeval matched each at IoU 0.5 ``[D]`` bool (area
    "all", its 100-per-image cap; detections it ignores, i.e. matched to crowd regions, left out)."""
    params = coco_eval.params
    num_areas, num_images = len(params.areaRng), len(params.imgIds)
    scores, matched = [], []
    # evalImgs is ordered [class][area range][image]; area range 0 is "all".
    for k in range(num_classes):
        start = k * num_areas * num_images
        class_scores, class_matched = [np.zeros(0)], [np.zeros(0, dtype=bool)]
        for entry in coco_eval.evalImgs[start : start + num_images]:
            if entry is None or not len(entry["dtScores"]):
                continue
            keep = ~np.asarray(entry["dtIgnore"][0], dtype=bool)
            class_scores.append(np.asarray(entry["dtScores"], dtype=np.float64)[keep])
            class_matched.append(np.asarray(entry["dtMatches"][0])[keep] > 0)
        scores.append(np.concatenate(class_scores))
        matched.append(np.concatenate(class_matched))
    return scores, matched


def _curves(scores: np.ndarray, matched: np.ndarray, instances: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall ``[K]`` of one class's detections kept at each confidence of :data:`CONFIDENCES`."""
    if instances == 0 or scores.size == 0:
        zeros = np.zeros_like(CONFIDENCES)
        return zeros, zeros.copy()
    order = np.argsort(-scores, kind="mergesort")
    scores, matched = scores[order], matched[order]
    true_pos = np.cumsum(matched)
    kept = np.searchsorted(-scores, -CONFIDENCES, side="right")  # detections with score >= each confidence
    tp = np.where(kept > 0, true_pos[np.maximum(kept - 1, 0)], 0)
    precision = np.where(kept > 0, tp / np.maximum(kept, 1), 1.0)  # above the top score: 1 (nothing wrong kept)
    return precision, tp / instances


def per_class_metrics(coco_gt, detections: Sequence[Mapping], image_ids: Sequence[int] | None = None,
                      class_names: Sequence[str] | None = None, coco_eval=None) -> ClassMetrics:
    """:class:`ClassMetrics` of ``detections`` against ``coco_gt`` over ``image_ids`` (default: every image).

    Class ``k`` is category ``sorted(coco_gt.getCatIds())[k]`` (the evaluator's rule); ``class_names`` default
    to the category names. ``coco_eval``: an already evaluated and accumulated ``COCOeval`` of the same
    detections and images, to reuse instead of running one.
    """
    cat_ids = sorted(coco_gt.getCatIds())
    names = list(class_names) if class_names is not None else [coco_gt.cats[c]["name"] for c in cat_ids]
    if len(names) != len(cat_ids):
        raise ValueError(f"{len(names)} class names for {len(cat_ids)} categories")
    image_ids = list(image_ids) if image_ids is not None else sorted(coco_gt.getImgIds())
    if coco_eval is None:
        coco_eval = run_cocoeval(coco_gt, detections, image_ids)
    if list(coco_eval.params.catIds) != cat_ids:
        raise ValueError("coco_eval was run over other categories than the ground truth's")
    num_classes = len(cat_ids)
    # precision: [IoU thresholds T, recall points R, classes K, area ranges A, max dets M]; area all, 100 dets.
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]
    ap = np.array([mean_valid(precision[:, :, k]) for k in range(num_classes)])
    ap50 = np.array([mean_valid(precision[0, :, k]) for k in range(num_classes)])

    class_of = {c: k for k, c in enumerate(cat_ids)}
    wanted = set(image_ids)
    instances = np.zeros(num_classes, dtype=np.int64)
    holders: list[set] = [set() for _ in range(num_classes)]
    for ann in coco_gt.dataset["annotations"]:
        if ann["image_id"] in wanted and not ann.get("iscrowd", 0) and not ann.get("ignore", 0):
            k = class_of[ann["category_id"]]
            instances[k] += 1
            holders[k].add(ann["image_id"])
    images = np.array([len(h) for h in holders], dtype=np.int64)

    scores, matched = _matched_at_iou50(coco_eval, num_classes)
    p_curve = np.zeros((num_classes, CONFIDENCES.size))
    r_curve = np.zeros_like(p_curve)
    for k in range(num_classes):
        p_curve[k], r_curve[k] = _curves(scores[k], matched[k], int(instances[k]))
    f1_curve = 2 * p_curve * r_curve / np.maximum(p_curve + r_curve, 1e-16)
    present = instances > 0
    best = int(np.argmax(f1_curve[present].mean(0))) if present.any() else 0
    nan = np.where(present, 1.0, np.nan)
    return ClassMetrics(
        names=names, images=images, instances=instances, precision=p_curve[:, best] * nan,
        recall=r_curve[:, best] * nan, ap50=ap50, ap=ap, confidence=float(CONFIDENCES[best]),
        conf_grid=CONFIDENCES.copy(), p_curve=p_curve, r_curve=r_curve, f1_curve=f1_curve,
        recall_points=np.asarray(coco_eval.params.recThrs), pr_curve=np.where(precision[0] > -1, precision[0], 0).T,
        num_images=len(image_ids),
    )
