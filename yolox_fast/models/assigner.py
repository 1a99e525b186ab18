"""SimOTA label assignment for a whole batch: the public entry point of the fast paths.

``SimOTAAssigner.assign`` takes padded, batched tensors and returns fixed-size outputs, so that no
backend needs a host sync. ``get_assignments`` is a drop-in for the official
``YOLOXHead.get_assignments`` (one image, the official 5-tuple).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..ops.arg_checks import check_args
from ..ops.simota_batch import SimOTABatch
from ..ops.simota_variant import DEFAULT_VARIANT, SimOTAVariant, resolve_variant


class AssignResult(NamedTuple):
    """Output of :meth:`SimOTAAssigner.assign`, all on the input device.

    Attributes:
        fg_mask: ``[B, A]`` bool, the anchors assigned to some GT.
        matched_gt: ``[B, A]`` int64, index into the padded GT axis, -1 for background.
        matched_iou: ``[B, A]`` float32, IoU of the prediction with its GT, 0 for background.
        num_fg: ``[B]`` int64, foreground anchors per image.
    """

    fg_mask: torch.Tensor
    matched_gt: torch.Tensor
    matched_iou: torch.Tensor
    num_fg: torch.Tensor


class SimOTAAssigner:
    """SimOTA label assignment (YOLOX), batched over images.

    Args:
        num_classes: C.
        variant: ``"seed"`` (default; the released weights), ``"center"`` (upstream 2023) or a
            :class:`~yolox_fast.ops.simota_variant.SimOTAVariant`; see :mod:`yolox_fast.ops.simota_variant`.
        center_radius, candidates, penalty: override one knob of ``variant`` (``candidates`` switches to the
            named variant with that rule, whose radius and penalty follow unless given too).
        check_values: whether :meth:`assign` also checks the data (class ids in ``[0, C)``, finite GT
            boxes). ``None`` (default): on CPU inputs only, where it costs no host sync; ``True``: on
            every device (a host sync per call on a GPU); ``False``: never, for callers whose data
            layer has checked the labels already (the trainer: ``TrainAugmentDataset`` checks each
            item in the loader workers).
        backend: force a backend (see :mod:`yolox_fast.ops.backends`); default: the best available,
            or the ``YOLOX_FAST_BACKEND`` environment variable.
    """

    def __init__(
        self,
        num_classes: int,
        variant: str | SimOTAVariant = DEFAULT_VARIANT,
        *,
        center_radius: float | None = None,
        candidates: str | None = None,
        penalty: float | None = None,
        backend: str | None = None,
        check_values: bool | None = None,
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.variant = resolve_variant(variant, center_radius=center_radius, candidates=candidates, penalty=penalty)
        self.backend = backend
        self.check_values = check_values

    def __repr__(self) -> str:
        v = self.variant
        return (
            f"SimOTAAssigner(num_classes={self.num_classes}, center_radius={v.center_radius}, "
            f"candidates={v.candidates!r}, penalty={v.penalty:g}, backend={self.backend!r}, "
            f"check_values={self.check_values!r})"
        )

    # ------------------------------------------------------------------------------------------
    def validate(
        self, pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes, gt_classes, gt_mask, values: bool = True
    ) -> None:
        """Raise ``ValueError`` naming the first argument that is malformed.

        Shapes, dtypes and devices: the ``simota_assign`` op's one rule (``csrc/common/simota_checks.h``, run
        through :mod:`yolox_fast.ops.arg_checks` for every backend); then the assigner's class count.
        ``values=False`` skips the checks that read the data (class ids in range, finite GT boxes), which
        cost a host sync on a GPU.
        """
        check_args("simota_assign", pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes, gt_classes, gt_mask)
        if cls_logits.shape[2] != self.num_classes:
            raise ValueError(f"cls_logits has {cls_logits.shape[2]} classes, the assigner {self.num_classes}")
        g = gt_boxes.shape[1]
        # Data checks: one reduction each, only over real GTs. (These sync; they are cheap next to
        # the assignment and catch the corrupt labels that otherwise poison training silently.)
        if g and values:
            bad_cls = gt_mask & ((gt_classes < 0) | (gt_classes >= self.num_classes))
            if bool(bad_cls.any()):
                bi, gi = bad_cls.nonzero()[0].tolist()
                raise ValueError(
                    f"gt_classes[{bi}, {gi}] = {int(gt_classes[bi, gi])} is outside [0, {self.num_classes})"
                )
            bad_box = gt_mask & ~torch.isfinite(gt_boxes).all(-1)
            if bool(bad_box.any()):
                bi, gi = bad_box.nonzero()[0].tolist()
                raise ValueError(f"gt_boxes[{bi}, {gi}] = {gt_boxes[bi, gi].tolist()} is not finite")

    def assign(
        self, pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes, gt_classes, gt_mask, validate: bool = True
    ) -> AssignResult:
        """Assign every anchor of every image to a GT or to background.

        Args:
            pred_boxes: ``[B, A, 4]`` predicted cx, cy, w, h in input pixels.
            cls_logits: ``[B, A, C]`` raw class logits (any float dtype; the cost is float32).
            obj_logits: ``[B, A, 1]`` raw objectness logits.
            grids: ``[A, 2]`` grid-cell x, y of each anchor.
            strides: ``[A]`` stride of each anchor.
            gt_boxes: ``[B, G, 4]`` cx, cy, w, h in input pixels.
            gt_classes: ``[B, G]`` integer class ids in ``[0, C)``.
            gt_mask: ``[B, G]`` bool, False for padding rows.
            validate: check shapes, dtypes and devices first (free: no host sync), and the values
                (class ids in range, finite GT boxes) as ``check_values`` says.

        Returns:
            :class:`AssignResult`.
        """
        batch = SimOTABatch(pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes, gt_classes, gt_mask)
        if validate:
            self.validate(*batch, values=self._check_values_on(getattr(pred_boxes, "device", None)))
        from ..ops.simota import assign_batch  # the dispatching wrapper

        # validate() has run the op's argument rule already: dispatch without running it again.
        fg, matched, iou = assign_batch(batch, self.variant, backend=self.backend, check=not validate)
        return AssignResult(fg, matched, iou, fg.sum(dim=1))

    def _check_values_on(self, device) -> bool:
        if self.check_values is None:  # auto: where the checks cost no host sync
            return device == torch.device("cpu")
        return self.check_values

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def get_assignments(self, *args, **kwargs):
        """Drop-in for the official ``YOLOXHead.get_assignments`` (one image).

        Accepts both official signatures, positionally or by keyword:

        * release 0.1-0.3: ``(batch_idx, num_gt, total_num_anchors, gt_bboxes_per_image, gt_classes,
          bboxes_preds_per_image, expanded_strides, x_shifts, y_shifts, cls_preds, bbox_preds,
          obj_preds, labels, imgs, mode="gpu")``;
        * upstream 2023: ``(batch_idx, num_gt, gt_bboxes_per_image, gt_classes, bboxes_preds_per_image,
          expanded_strides, x_shifts, y_shifts, cls_preds, obj_preds, mode="gpu")``.

        ``expanded_strides``, ``x_shifts``, ``y_shifts`` are ``[1, A]``; ``cls_preds [B, A, C]`` and
        ``obj_preds [B, A, 1]`` are raw logits of the whole batch.

        Returns:
            ``(gt_matched_classes [F], fg_mask [A], pred_ious_this_matching [F], matched_gt_inds [F],
            num_fg)`` with ``num_fg`` a Python int, as the official code returns.
        """
        old = [
            "batch_idx",
            "num_gt",
            "total_num_anchors",
            "gt_bboxes_per_image",
            "gt_classes",
            "bboxes_preds_per_image",
            "expanded_strides",
            "x_shifts",
            "y_shifts",
            "cls_preds",
            "bbox_preds",
            "obj_preds",
            "labels",
            "imgs",
            "mode",
        ]
        new = [
            "batch_idx",
            "num_gt",
            "gt_bboxes_per_image",
            "gt_classes",
            "bboxes_preds_per_image",
            "expanded_strides",
            "x_shifts",
            "y_shifts",
            "cls_preds",
            "obj_preds",
            "mode",
        ]
        names = old if (len(args) >= 13 or "total_num_anchors" in kwargs) else new
        if len(args) > len(names):
            raise TypeError(f"get_assignments takes at most {len(names)} arguments, got {len(args)}")
        bound = dict(zip(names, args, strict=False))
        for k, v in kwargs.items():
            if k not in names:
                raise TypeError(f"get_assignments got an unexpected argument {k!r}")
            bound[k] = v
        b = int(bound["batch_idx"])
        gt = bound["gt_bboxes_per_image"]
        classes = bound["gt_classes"]
        pred = bound["bboxes_preds_per_image"]
        strides = bound["expanded_strides"].reshape(-1)
        grids = torch.stack([bound["x_shifts"].reshape(-1), bound["y_shifts"].reshape(-1)], dim=1)
        res = self.assign(
            pred[None],
            bound["cls_preds"][b : b + 1],
            bound["obj_preds"][b : b + 1].reshape(1, -1, 1),
            grids,
            strides,
            gt[None],
            classes.long()[None],
            torch.ones(1, gt.shape[0], dtype=torch.bool, device=gt.device),
        )
        fg = res.fg_mask[0]
        matched = res.matched_gt[0][fg]
        return classes[matched], fg, res.matched_iou[0][fg].to(pred.dtype), matched, int(fg.sum())
