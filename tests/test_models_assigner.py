"""SimOTAAssigner API: argument checks, variants, the official drop-in, the extension fallback."""

import dataclasses
import subprocess
import sys
import textwrap

import pytest
import torch

from yolox_fast import SimOTAAssigner
from yolox_fast.ops import _extension
from yolox_fast.ops import reference
from yolox_fast.ops.anchors import anchor_grid_for_input
from yolox_fast.ops.simota_variant import CENTER, SEED


def batch(b=2, g=3, c=4, img=128, seed=0):
    gen = torch.Generator().manual_seed(seed)
    grids, strides = anchor_grid_for_input(img, img)
    a = grids.shape[0]
    centers = reference.anchor_centers(grids, strides)
    pred = torch.cat([centers + torch.randn(a, 2, generator=gen) * 4, strides[:, None] * 3 * torch.ones(a, 2)], 1)
    gt = torch.cat([torch.rand(b, g, 2, generator=gen) * img, torch.rand(b, g, 2, generator=gen) * 40 + 8], 2)
    return dict(
        pred_boxes=pred[None].repeat(b, 1, 1),
        cls_logits=torch.randn(b, a, c, generator=gen),
        obj_logits=torch.randn(b, a, 1, generator=gen),
        grids=grids,
        strides=strides,
        gt_boxes=gt,
        gt_classes=torch.randint(0, c, (b, g), generator=gen),
        gt_mask=torch.ones(b, g, dtype=torch.bool),
    )


def test_defaults_follow_the_variants():
    assert SimOTAAssigner(80).variant == SEED
    assert SimOTAAssigner(80, "center").variant == CENTER
    assert SimOTAAssigner(80, candidates="center").variant == CENTER  # the rule brings its radius and penalty
    assert SimOTAAssigner(80, center_radius=CENTER.center_radius, candidates="center").variant == CENTER
    assert SimOTAAssigner(80, CENTER, penalty=7.0).variant == dataclasses.replace(CENTER, penalty=7.0)
    with pytest.raises(ValueError, match="candidates must be one of"):
        SimOTAAssigner(80, candidates="box")
    with pytest.raises(ValueError, match="unknown SimOTA variant 'upstream'; choose from seed, center"):
        SimOTAAssigner(80, "upstream")


def test_assign_outputs_and_num_fg():
    args = batch()
    res = SimOTAAssigner(4).assign(**args)
    b, a = args["pred_boxes"].shape[:2]
    assert res.fg_mask.shape == (b, a) and res.fg_mask.dtype == torch.bool
    assert res.matched_gt.dtype == torch.int64 and res.matched_iou.dtype == torch.float32
    assert torch.equal(res.num_fg, res.fg_mask.sum(1))
    assert ((res.matched_gt >= 0) == res.fg_mask).all()
    want = reference.simota_assign(*args.values())
    assert torch.equal(res.fg_mask, want[0]) and torch.equal(res.matched_gt, want[1])


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(pred_boxes=torch.zeros(2, 10, 4)), r"cls_logits must be \[B=2, A=10, C>=1\]"),
        (dict(cls_logits=torch.zeros(2, 336, 5)), "cls_logits has 5 classes, the assigner 4"),
        (dict(obj_logits=torch.zeros(2, 336, 2)), r"obj_logits must be \[B=2, A=336, 1\] or \[B, A\]"),
        (dict(gt_boxes=torch.zeros(2, 3, 5)), r"gt_boxes must be \[B=2, G, 4\]"),
        (dict(gt_mask=torch.ones(2, 3)), "gt_mask must be bool"),
        (dict(gt_classes=torch.zeros(2, 3)), "gt_classes must be an integer tensor"),
        (dict(gt_classes=torch.tensor([[0, 1, 4], [0, 0, 0]])), r"gt_classes\[0, 2\] = 4 is outside \[0, 4\)"),
        (dict(gt_classes=torch.tensor([[0, 1, 3], [0, -1, 0]])), r"gt_classes\[1, 1\] = -1"),
        (dict(gt_boxes=torch.tensor([[[1.0, 1, 1, 1]] * 3, [[1.0, float("nan"), 1, 1]] * 3])),
         r"gt_boxes\[1, 0\] .* is not finite"),
    ],
)
@pytest.mark.skipif(not _extension.extension_loaded(), reason="the argument rules are C++ (yolox_fast._C not built)")
def test_bad_input_names_the_argument(change, match):
    args = batch()
    args.update(change)
    with pytest.raises(ValueError, match=match):
        SimOTAAssigner(4).assign(**args)


@pytest.mark.skipif(not _extension.extension_loaded(), reason="the argument rules are C++ (yolox_fast._C not built)")
def test_non_tensor_argument_is_named():
    args = batch()
    args["pred_boxes"] = "boxes"
    with pytest.raises(RuntimeError, match="Expected a value of type 'Tensor' for argument 'pred_boxes'"):
        SimOTAAssigner(4).assign(**args)


@pytest.mark.parametrize("check_values", [None, True, False])
def test_value_checks_follow_the_flag(check_values):
    """check_values=False (the trainer: its data layer checked the labels) skips the data checks, so a
    GPU step has no host sync for them; None checks on CPU inputs only, True everywhere."""
    args = batch()
    args["gt_boxes"][1, 0, 1] = float("nan")
    assigner = SimOTAAssigner(4, check_values=check_values, backend="torch")
    if check_values is False:
        assigner.assign(**args)  # the torch backend treats the NaN box as one that matches nothing
    else:
        with pytest.raises(ValueError, match=r"gt_boxes\[1, 0\] .* is not finite"):
            assigner.assign(**args)
    assert assigner._check_values_on(torch.device("cuda")) is bool(check_values)


def test_padding_rows_are_not_checked():
    args = batch()
    args["gt_mask"][1, 2] = False
    args["gt_classes"][1, 2] = 999  # padding may hold anything
    SimOTAAssigner(4).assign(**args)


def test_get_assignments_is_the_official_drop_in():
    args = batch(b=2, g=3)
    assigner = SimOTAAssigner(4)
    res = assigner.assign(**args)
    grids, strides = args["grids"], args["strides"]
    labels = torch.cat([args["gt_classes"][..., None].float(), args["gt_boxes"]], -1)
    for bi in range(2):
        common = dict(
            gt_bboxes_per_image=args["gt_boxes"][bi], gt_classes=args["gt_classes"][bi].float(),
            bboxes_preds_per_image=args["pred_boxes"][bi], expanded_strides=strides[None],
            x_shifts=grids[None, :, 0], y_shifts=grids[None, :, 1], cls_preds=args["cls_logits"],
            obj_preds=args["obj_logits"],
        )
        # Release 0.1-0.3 signature, positional (with total_num_anchors, bbox_preds, labels, imgs).
        old = assigner.get_assignments(
            bi, 3, grids.shape[0], common["gt_bboxes_per_image"], common["gt_classes"],
            common["bboxes_preds_per_image"], common["expanded_strides"], common["x_shifts"], common["y_shifts"],
            common["cls_preds"], args["pred_boxes"], common["obj_preds"], labels, None,
        )
        # Upstream 2023 signature, by keyword.
        new = assigner.get_assignments(batch_idx=bi, num_gt=3, **common)
        for out in (old, new):
            gt_matched_classes, fg_mask, ious, matched_inds, num_fg = out
            assert torch.equal(fg_mask, res.fg_mask[bi])
            assert num_fg == int(res.num_fg[bi]) and isinstance(num_fg, int)
            assert torch.equal(matched_inds, res.matched_gt[bi][fg_mask])
            assert torch.equal(gt_matched_classes, args["gt_classes"][bi][matched_inds].float())
            torch.testing.assert_close(ious, res.matched_iou[bi][fg_mask])


def test_works_without_the_extension_and_says_so_once():
    code = textwrap.dedent(
        """
        import sys, warnings
        sys.modules["yolox_fast._C"] = None  # as if the extension had not been built
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import torch
            from yolox_fast.ops.iou import pairwise_iou
            from yolox_fast.ops import backends
            a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
            print(float(pairwise_iou(a, a)[0, 0]), backends.choose("pairwise_iou", "cpu")[0])
            pairwise_iou(a, a)
        print(sum("yolox_fast._C is not available" in str(w.message) for w in caught))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1.0", "torch", "1"]
