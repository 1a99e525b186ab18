"""The validation run folder: every figure of one evaluation, from its detections and the ground truth.

:func:`write_validation_report` takes COCO results (what :meth:`COCOEvaluator.predict
<yolox_fast.evaluation.coco.COCOEvaluator.predict>` returns) and the ground truth, and writes:

==========================  =====================================================================
``metrics.json``            pycocotools' 12 numbers (AP50:95, AP50, ..., ARl), images, detections
``coco_summary.txt``        pycocotools' summary text, as ``eval`` prints it
``per_class.csv`` / ``.txt``  class, images, instances, precision, recall, AP50, AP50-95 (an ``all`` row first)
``PR_curve.png``            precision-recall at IoU 0.5 per class and their mean (area: AP50)
``F1_curve.png``            F1 against the confidence threshold
``confusion_matrix.png``    normalised per true class, background row and column (``.csv``: the counts)
``predictions.json``        the detections as COCO results
``val_examples.jpg``        the first few images: ground truth beside the predictions
==========================  =====================================================================

The headline numbers are pycocotools' (:mod:`yolox_fast.evaluation.per_class` runs the same COCOeval
over the same detections and images, so they equal the evaluator's).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..data import read_image
from ..files.atomic import atomic_write
from ..ops.postprocess import PREDICT_CONF
from .coco import STAT_NAMES
from .confusion import confusion_matrix, xyxy_of
from .per_class import ClassMetrics, per_class_metrics, run_cocoeval
from .plots import (
    ground_truth_beside_predictions,
    plot_confusion_matrix,
    plot_f1_curve,
    plot_pr_curve,
    write_image,
)

#: Score threshold of the confusion matrix and of the boxes drawn on the example images: what predict shows.
SHOW_CONF = PREDICT_CONF


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _csv_text(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _cell(value) -> str | int:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.6g}"
    return value


def write_per_class_csv(metrics: ClassMetrics, path: Path) -> None:
    rows = metrics.rows()
    header = list(rows[0])
    _write_text(path, _csv_text(header, [[_cell(r[k]) for k in header] for r in rows]))


def write_confusion_csv(matrix: np.ndarray, names: Sequence[str], path: Path) -> None:
    """The counts, one row per predicted class (first cell its name), one column per true class."""
    labels = [*names, "background"]
    _write_text(path, _csv_text(["predicted \\ true", *labels],
                                [[labels[r], *matrix[r].tolist()] for r in range(len(labels))]))


def _examples(coco_gt, detections: Sequence[Mapping], image_ids: Sequence[int], image_dir: str | os.PathLike,
              names: Sequence[str], count: int) -> np.ndarray | None:
    """The first ``count`` images, ground truth beside the predictions scoring >= :data:`SHOW_CONF`, stacked."""
    class_of = {c: k for k, c in enumerate(sorted(coco_gt.getCatIds()))}
    rows = []
    for image_id in list(image_ids)[:count]:
        img = read_image(os.path.join(image_dir, coco_gt.imgs[image_id]["file_name"]))
        info = coco_gt.imgs[image_id]
        # Boxes are in the annotation's frame; draw on the image resized to it.
        if (info.get("width"), info.get("height")) not in ((None, None), (img.shape[1], img.shape[0])):
            img = cv2.resize(img, (int(info["width"]), int(info["height"])))
        gts = [a for a in coco_gt.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        dets = [d for d in detections if d["image_id"] == image_id and d["score"] >= SHOW_CONF]
        rows.append(ground_truth_beside_predictions(
            img, xyxy_of(gts), np.array([class_of[a["category_id"]] for a in gts], dtype=np.int64),
            xyxy_of(dets), np.array([d["score"] for d in dets]),
            np.array([class_of[d["category_id"]] for d in dets], dtype=np.int64), names))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded, axis=0)


def write_validation_report(out_dir: str | os.PathLike, coco_gt, detections: Sequence[Mapping],
                            image_dir: str | os.PathLike, image_ids: Sequence[int] | None = None,
                            class_names: Sequence[str] | None = None, examples: int = 4) -> dict:
    """Write the validation run folder (see the module docstring) into ``out_dir``.

    Args:
        out_dir: the run folder (created; files already there with these names are replaced).
        coco_gt: the ground truth (``pycocotools.coco.COCO``).
        detections: COCO results ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``, original pixels.
        image_dir: the images are ``image_dir / file_name`` of ``coco_gt`` (for the examples).
        image_ids: the evaluated images (default: all of ``coco_gt``).
        class_names: one per category in id order (default: the category names).
        examples: how many images ``val_examples.jpg`` shows (0: none).

    Returns:
        ``{"dir": Path, "metrics": ClassMetrics, "confusion": counts [C + 1, C + 1], "stats": {AP, AP50, ...}}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image_ids = list(image_ids) if image_ids is not None else sorted(coco_gt.getImgIds())
    coco_eval = run_cocoeval(coco_gt, detections, image_ids)
    with contextlib.redirect_stdout(io.StringIO()) as summary:
        coco_eval.summarize()
    stats = {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats, strict=True)}
    metrics = per_class_metrics(coco_gt, detections, image_ids, class_names, coco_eval=coco_eval)
    matrix = confusion_matrix(coco_gt, detections, image_ids, conf=SHOW_CONF)

    _write_text(out / "metrics.json", json.dumps(
        {**stats, "images": len(image_ids), "detections": len(detections)}, indent=2) + "\n")
    _write_text(out / "coco_summary.txt", summary.getvalue())
    write_per_class_csv(metrics, out / "per_class.csv")
    _write_text(out / "per_class.txt", metrics.table() + "\n")
    write_confusion_csv(matrix, metrics.names, out / "confusion_matrix.csv")
    plot_pr_curve(metrics, out / "PR_curve.png")
    plot_f1_curve(metrics, out / "F1_curve.png")
    plot_confusion_matrix(matrix, metrics.names, out / "confusion_matrix.png")
    _write_text(out / "predictions.json", json.dumps(list(detections)))
    if examples > 0:
        panel = _examples(coco_gt, detections, image_ids, image_dir, metrics.names, examples)
        if panel is not None:
            write_image(out / "val_examples.jpg", panel)
    return {"dir": out, "metrics": metrics, "confusion": matrix, "stats": stats}


class EvaluatorKeepingDetections:
    """``evaluate(model) -> stats`` of a :class:`~yolox_fast.evaluation.coco.COCOEvaluator` (what the trainer
    calls after each due epoch) that keeps the last call's detections, to write the validation run folder of
    the final evaluation with :meth:`write_report`. They are kept as one float64 array ``[D, 7]`` (image id,
    category id, x, y, w, h, score): a tenth of the memory of the result dicts, held while training goes on.
    """

    def __init__(self, evaluator, device=None):
        self.evaluator, self.device = evaluator, device
        self.detections: np.ndarray | None = None

    def __call__(self, model) -> dict:
        detections = self.evaluator.predict(model, self.device)
        self.detections = np.array([[d["image_id"], d["category_id"], *d["bbox"], d["score"]] for d in detections],
                                   dtype=np.float64).reshape(-1, 7)
        return self.evaluator.score(detections)

    def write_report(self, out_dir: str | os.PathLike) -> dict | None:
        """:func:`write_validation_report` of the last evaluation into ``out_dir``; None before any evaluation."""
        if self.detections is None:
            return None
        detections = [{"image_id": int(row[0]), "category_id": int(row[1]), "bbox": row[2:6].tolist(),
                       "score": float(row[6])} for row in self.detections]
        ev = self.evaluator
        return write_validation_report(out_dir, ev.coco, detections, ev.image_dir, ev.image_ids, ev.class_names)
