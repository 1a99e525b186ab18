"""Detection confusion matrix: which class each ground-truth box was detected as, or missed.

ultralytics' rule (``ConfusionMatrix.process_batch``): per image, detections scoring at least ``conf``
are paired with ground-truth boxes of any class whose IoU exceeds ``iou`` (by default the prediction
defaults ``PREDICT_CONF`` 0.25 and ``PREDICT_IOU`` 0.45 of :mod:`yolox_fast.ops.postprocess`: the
detections a user sees, as ultralytics ties its matrix to its predict settings); pairs are taken by
descending IoU, each detection and each ground-truth box at most once. Then

- a paired ground-truth box of class ``g`` detected as class ``p`` counts at ``[p, g]``;
- an unpaired ground-truth box counts at ``[C, g]`` (row "background": missed);
- an unpaired detection of class ``p`` counts at ``[p, C]`` (column "background": a false alarm).

So column ``g < C`` sums to the instances of class ``g``, and the whole matrix minus its background column
sums to every instance. Crowd boxes (pycocotools' ignore regions) are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..ops.iou import pairwise_iou
from ..ops.postprocess import PREDICT_CONF, PREDICT_IOU


def _pairs(gt_boxes: np.ndarray, det_boxes: np.ndarray, iou_threshold: float) -> list[tuple[int, int]]:
    """``(gt index, detection index)`` pairs, by descending IoU, each box once, IoU > ``iou_threshold``."""
    if len(gt_boxes) == 0 or len(det_boxes) == 0:
        return []
    iou = pairwise_iou(torch.from_numpy(gt_boxes), torch.from_numpy(det_boxes), fmt="xyxy").numpy()
    gi, di = np.nonzero(iou > iou_threshold)
    order = np.argsort(-iou[gi, di], kind="stable")
    pairs, used_gt, used_det = [], set(), set()
    for g, d in zip(gi[order].tolist(), di[order].tolist(), strict=True):
        if g not in used_gt and d not in used_det:
            used_gt.add(g)
            used_det.add(d)
            pairs.append((g, d))
    return pairs


def xyxy_of(items: Sequence[Mapping]) -> np.ndarray:
    """The ``bbox`` ([x, y, w, h]) of COCO annotations or results as float32 ``[N, 4]`` x1, y1, x2, y2."""
    boxes = np.asarray([i["bbox"] for i in items], dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def confusion_matrix(coco_gt, detections: Sequence[Mapping], image_ids: Sequence[int] | None = None,
                     conf: float = PREDICT_CONF, iou: float = PREDICT_IOU) -> np.ndarray:
    """Counts ``[C + 1, C + 1]`` (int64), rows the predicted class, columns the true class, index ``C`` the
    background (see the module docstring). Class ``k`` is category ``sorted(coco_gt.getCatIds())[k]``.

    Args:
        coco_gt: the ground truth (``pycocotools.coco.COCO``).
        detections: COCO results ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``.
        image_ids: images to count (default: every image of ``coco_gt``).
        conf: detections scoring below this are not counted.
        iou: a detection and a ground-truth box pair when their IoU exceeds this.
    """
    cat_ids = sorted(coco_gt.getCatIds())
    class_of = {c: k for k, c in enumerate(cat_ids)}
    num_classes = len(cat_ids)
    image_ids = list(image_ids) if image_ids is not None else coco_gt.getImgIds()
    wanted = set(image_ids)
    dets_by_image: dict[int, list[Mapping]] = {}
    for det in detections:
        if det["image_id"] in wanted and det["score"] >= conf:
            dets_by_image.setdefault(det["image_id"], []).append(det)
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    background = num_classes
    for image_id in image_ids:
        gts = [a for a in coco_gt.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0) and not a.get("ignore", 0)]
        dets = dets_by_image.get(image_id, [])
        gt_classes = [class_of[a["category_id"]] for a in gts]
        det_classes = [class_of[d["category_id"]] for d in dets]
        pairs = _pairs(xyxy_of(gts), xyxy_of(dets), iou)
        paired_gt = {g: d for g, d in pairs}
        paired_det = {d for _, d in pairs}
        for g, gt_class in enumerate(gt_classes):
            d = paired_gt.get(g)
            matrix[det_classes[d] if d is not None else background, gt_class] += 1
        for d, det_class in enumerate(det_classes):
            if d not in paired_det:
                matrix[det_class, background] += 1
    return matrix


def normalize_columns(matrix: np.ndarray) -> np.ndarray:
    """Each column divided by its sum (the share of each true class detected as each row); empty columns stay 0."""
    sums = matrix.sum(0, keepdims=True).astype(np.float64)
    return np.divide(matrix, sums, out=np.zeros(matrix.shape, dtype=np.float64), where=sums > 0)
