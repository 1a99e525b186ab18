"""SimOTA label assignment for a whole batch: the public entry point of the fast paths.

``SimOTAAssigner.assign`` takes padded, batched tensors and returns fixed-size outputs, so that no
backend needs a host sync. ``get_assignments`` is a drop-in for the official
``YOLOXHead.get_assignments`` (one image, the official 5-tuple).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .ops.simota_variant import DEFAULT_VARIANT, SimOTAVariant, resolve_variant


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


def _check_tensor(name: str, t, dims: int, last: int | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dims or (last is not None and t.shape[-1] != last):
        want = f"{dims}-d" + (f" with last dim {last}" if last is not None else "")
        raise ValueError(f"{name} must be {want}, got shape {tuple(t.shape)}")


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

        ``values=False`` skips the checks that read the data (class ids in range, finite GT boxes),
        which cost a host sync on a GPU.
        """
        _check_tensor("pred_boxes", pred_boxes, 3, 4)
        _check_tensor("cls_logits", cls_logits, 3)
        _check_tensor("obj_logits", obj_logits, 3, 1)
        _check_tensor("grids", grids, 2, 2)
        _check_tensor("strides", strides, 1)
        _check_tensor("gt_boxes", gt_boxes, 3, 4)
        _check_tensor("gt_classes", gt_classes, 2)
        _check_tensor("gt_mask", gt_mask, 2)
        b, a = pred_boxes.shape[:2]
        if cls_logits.shape[:2] != (b, a) or obj_logits.shape[:2] != (b, a):
            raise ValueError(
                f"cls_logits {tuple(cls_logits.shape)} and obj_logits {tuple(obj_logits.shape)} "
                f"must match pred_boxes [B={b}, A={a}, ...]"
            )
        if cls_logits.shape[2] != self.num_classes:
            raise ValueError(f"cls_logits has {cls_logits.shape[2]} classes, the assigner {self.num_classes}")
        if grids.shape[0] != a or strides.shape[0] != a:
            raise ValueError(f"grids {tuple(grids.shape)} and strides {tuple(strides.shape)} must have A={a} rows")
        g = gt_boxes.shape[1]
        if gt_boxes.shape[0] != b or gt_classes.shape != (b, g) or gt_mask.shape != (b, g):
            raise ValueError(
                f"gt_boxes {tuple(gt_boxes.shape)}, gt_classes {tuple(gt_classes.shape)} and gt_mask "
                f"{tuple(gt_mask.shape)} must be [B={b}, G, 4], [B, G], [B, G]"
            )
        if gt_mask.dtype != torch.bool:
            raise ValueError(f"gt_mask must be bool, got {gt_mask.dtype}")
        if gt_classes.dtype.is_floating_point or gt_classes.dtype == torch.bool:
            raise ValueError(f"gt_classes must be an integer tensor, got {gt_classes.dtype}")
        for name, t in (
            ("pred_boxes", pred_boxes),
            ("cls_logits", cls_logits),
            ("obj_logits", obj_logits),
            ("gt_boxes", gt_boxes),
        ):
            if not t.dtype.is_floating_point:
                raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
        device = pred_boxes.device
        for name, t in (
            ("cls_logits", cls_logits),
            ("obj_logits", obj_logits),
            ("grids", grids),
            ("strides", strides),
            ("gt_boxes", gt_boxes),
            ("gt_classes", gt_classes),
            ("gt_mask", gt_mask),
        ):
            if t.device != device:
                raise ValueError(f"{name} is on {t.device} but pred_boxes is on {device}")
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
        if validate:
            self.validate(
                pred_boxes,
                cls_logits,
                obj_logits,
                grids,
                strides,
                gt_boxes,
                gt_classes,
                gt_mask,
                values=self._check_values_on(getattr(pred_boxes, "device", None)),
            )
        from .ops.simota import simota_assign  # the dispatching wrapper

        fg, matched, iou = simota_assign(
            pred_boxes,
            cls_logits,
            obj_logits,
            grids,
            strides,
            gt_boxes,
            gt_classes,
            gt_mask,
            self.variant,
            backend=self.backend,
        )
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
