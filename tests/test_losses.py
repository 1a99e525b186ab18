"""The fixed-shape training loss against the official per-image loss (``ops.reference.yolox_loss``).

Realistic batches: the official YOLOX-Nano's raw output on seeded mosaic batches of coco128 (so the
predictions, the assignment and the loss terms are those of a trained model on real labels), with and
without the L1 term, plus a batch holding an image without boxes. Values and the gradient with
respect to the head output must agree to 1e-6 relative.
"""

from __future__ import annotations

import pytest
import torch

from yolox_fast import SimOTAAssigner
from yolox_fast.models import YOLOXLoss
from yolox_fast.ops import reference
from yolox_fast.ops.anchors import anchor_grid_for_input
from yolox_fast.ops.box_coding import decode_boxes, encode_boxes

SIZE, BATCH = 320, 4
KEYS = ("total_loss", "iou_loss", "l1_loss", "conf_loss", "cls_loss", "num_fg")


@pytest.fixture(scope="module")
def real_batch(shared_data, nano_model):
    """``(raw [B, A, 85], labels [B, 120, 5])``: YOLOX-Nano head output on a mosaic batch of coco128."""
    from yolox_fast.data import COCODetection, TrainAugmentDataset, collate

    root = shared_data / "coco128"
    if not (root / "annotations" / "instances_train2017.json").is_file():
        pytest.skip(f"coco128 not found under {root}")
    base = COCODetection(root / "train2017", root / "annotations" / "instances_train2017.json")
    augmented = TrainAugmentDataset(base, input_size=SIZE, mosaic_prob=1.0, mixup_prob=0.0, mosaic_scale=(0.5, 1.5),
                                    seed=3)
    images, labels, _ = collate([augmented[i] for i in range(BATCH)])
    labels[-1] = 0  # an image without any box
    with torch.no_grad():
        raw, _ = nano_model.head.forward_raw(nano_model.backbone(images.float()))
    assert (labels[:-1].abs().sum(-1) > 0).sum() >= 10, "the batch should hold a realistic number of boxes"
    return raw, labels


def _losses_and_grad(fn, raw):
    raw = raw.clone().requires_grad_(True)
    out = fn(raw)
    out["total_loss"].backward()
    return {k: v.detach() for k, v in out.items()}, raw.grad


@pytest.mark.parametrize("use_l1", [False, True])
def test_loss_equals_the_per_image_reference(real_batch, use_l1):
    raw, labels = real_batch
    grids, strides = anchor_grid_for_input(SIZE, SIZE)
    loss = YOLOXLoss(80, SimOTAAssigner(80))
    loss.use_l1 = use_l1
    fast, fast_grad = _losses_and_grad(lambda r: loss(r, grids, strides, labels), raw)
    ref, ref_grad = _losses_and_grad(lambda r: reference.yolox_loss(r, grids, strides, labels, 80, use_l1), raw)
    for key in KEYS:
        torch.testing.assert_close(fast[key], ref[key].float(), rtol=1e-6, atol=0, msg=key)
    assert ref["num_fg"] > 1 and ref["iou_loss"] > 0 and ref["cls_loss"] > 0
    assert (ref["l1_loss"] > 0) == use_l1
    # Gradients: the reference's IoU is a different float formula (pairwise_iou), so compare to the scale.
    torch.testing.assert_close(fast_grad, ref_grad, rtol=1e-5, atol=1e-6 * float(ref_grad.abs().max()))


def test_loss_with_tight_label_padding_keeps_every_foreground_anchor(real_batch):
    """The loss gathers at most 10 G anchors per image (G = label rows): exact with no padding rows at all,
    including a GT that takes the maximum of 10 anchors."""
    raw, labels = real_batch
    grids, strides = anchor_grid_for_input(SIZE, SIZE)
    rows = int((labels.abs().sum(-1) > 0).sum(-1).max())
    tight = labels[:, :rows].clone()
    one_gt = torch.zeros(BATCH, 1, 5)
    one_gt[:, 0] = torch.tensor([3.0, 160.0, 160.0, 300.0, 300.0])  # a big box: many anchors of IoU near 1
    boxes = raw.clone()
    boxes[..., 2:4] = torch.log(torch.tensor(300.0) / strides[:, None])  # every prediction is the GT box
    boxes[..., :2] = 160.0 / strides[:, None] - grids
    for batch_raw, batch_labels in ((raw, tight), (boxes, one_gt)):
        loss = YOLOXLoss(80, SimOTAAssigner(80))
        loss.use_l1 = True
        fast = loss(batch_raw, grids, strides, batch_labels)
        ref = reference.yolox_loss(batch_raw, grids, strides, batch_labels, 80, use_l1=True)
        for key in KEYS:
            torch.testing.assert_close(fast[key], ref[key].float(), rtol=1e-6, atol=1e-7, msg=key)
    assert fast["num_fg"] >= 9  # each image's single GT took 9 or 10 of the at most 10 gathered anchors


def test_loss_of_a_batch_without_boxes_is_the_objectness_term_only(real_batch):
    raw, labels = real_batch
    grids, strides = anchor_grid_for_input(SIZE, SIZE)
    loss = YOLOXLoss(80, SimOTAAssigner(80))
    loss.use_l1 = True
    out = loss(raw, grids, strides, torch.zeros_like(labels))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(raw[..., 4], torch.zeros_like(raw[..., 4]),
                                                                     reduction="sum")
    torch.testing.assert_close(out["total_loss"], expected, rtol=1e-6, atol=0)
    assert out["iou_loss"] == 0 and out["cls_loss"] == 0 and out["l1_loss"] == 0 and out["num_fg"] == 0


def test_loss_ignores_non_finite_background_predictions(real_batch):
    """A background anchor whose box overflows must not turn the IoU sum into NaN (masking, not multiplying)."""
    raw, labels = real_batch
    grids, strides = anchor_grid_for_input(SIZE, SIZE)
    loss = YOLOXLoss(80, SimOTAAssigner(80))
    base = loss(raw, grids, strides, labels)
    bad = raw.clone()
    bad[-1, 0, 2:4] = 1000.0  # exp overflows to inf in the image without boxes: background for sure
    out = loss(bad, grids, strides, labels)
    for key in ("iou_loss", "cls_loss"):
        torch.testing.assert_close(out[key], base[key], rtol=1e-6, atol=0)


def test_box_coding_round_trip():
    grids, strides = anchor_grid_for_input(64, 96)
    offsets = torch.randn(2, grids.shape[0], 4, dtype=torch.float64)
    boxes = decode_boxes(offsets, grids, strides)
    assert boxes.dtype == torch.float64
    torch.testing.assert_close(boxes[..., :2], (offsets[..., :2] + grids) * strides[:, None].double())
    torch.testing.assert_close(encode_boxes(boxes, grids, strides), offsets, rtol=1e-6, atol=1e-6)


def test_loss_compiles_with_fullgraph(real_batch):
    """No graph break anywhere in the assigner op and the loss (aot_eager: traced with fake tensors, forward
    and backward, without the minutes of C++ code generation of inductor on this CPU)."""
    raw, labels = real_batch
    raw, labels = raw[:2].clone(), labels[:2].clone()
    grids, strides = anchor_grid_for_input(SIZE, SIZE)
    loss = YOLOXLoss(80, SimOTAAssigner(80, check_values=False))  # as the trainer calls it
    loss.use_l1 = True
    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got, got_grad = _losses_and_grad(lambda r: compiled(r, grids, strides, labels), raw)
    want, want_grad = _losses_and_grad(lambda r: loss(r, grids, strides, labels), raw)
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=0, msg=key)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-5, atol=1e-6 * float(want_grad.abs().max()))
