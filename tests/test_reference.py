"""The reference itself: against the official algorithm transcribed literally, brute force and hand cases."""

import pytest
import torch
import torch.nn.functional as F

from yolox_fast.ops import reference
from yolox_fast.ops.anchors import anchor_grid_for_input
from yolox_fast.ops.simota_variant import CENTER, SEED, VARIANTS

# ---------------------------------------------------------------------------------------------
# SimOTA
# ---------------------------------------------------------------------------------------------


def official_assign(pred, cls, obj, grids, strides, gt, gt_cls, variant):
    """The official get_assignments + dynamic_k_matching, transcribed as literally as possible
    (radius, candidate rule and penalty from ``variant``, as the two official versions set them).

    (torch.topk order among equal values is unspecified, so compare only on tie-free inputs.)
    """
    radius, center_only, penalty = variant.op_args()
    g = gt.shape[0]
    xc = (grids[:, 0] * strides + 0.5 * strides)[None].repeat(g, 1)
    yc = (grids[:, 1] * strides + 0.5 * strides)[None].repeat(g, 1)
    left, r = (gt[:, 0] - 0.5 * gt[:, 2])[:, None], (gt[:, 0] + 0.5 * gt[:, 2])[:, None]
    t, b = (gt[:, 1] - 0.5 * gt[:, 3])[:, None], (gt[:, 1] + 0.5 * gt[:, 3])[:, None]
    in_box = torch.stack([xc - left, yc - t, r - xc, b - yc], 2).min(-1).values > 0
    cl, cr = gt[:, 0:1] - radius * strides[None], gt[:, 0:1] + radius * strides[None]
    ct, cb = gt[:, 1:2] - radius * strides[None], gt[:, 1:2] + radius * strides[None]
    in_ctr = torch.stack([xc - cl, yc - ct, cr - xc, cb - yc], 2).min(-1).values > 0
    if center_only:
        fg_mask = in_ctr.sum(0) > 0
        geom = in_ctr[:, fg_mask]
    else:
        fg_mask = (in_box.sum(0) > 0) | (in_ctr.sum(0) > 0)
        geom = in_box[:, fg_mask] & in_ctr[:, fg_mask]
    p, c, o = pred[fg_mask], cls[fg_mask], obj[fg_mask]
    n = p.shape[0]
    ious = reference.pairwise_iou(gt, p)
    gt_onehot = F.one_hot(gt_cls.long(), cls.shape[1]).float().unsqueeze(1).repeat(1, n, 1)
    probs = c.float().unsqueeze(0).repeat(g, 1, 1).sigmoid_() * o.float().unsqueeze(0).repeat(g, 1, 1).sigmoid_()
    cls_loss = F.binary_cross_entropy(probs.sqrt_(), gt_onehot, reduction="none").sum(-1)
    cost = cls_loss + 3.0 * -torch.log(ious + 1e-8) + penalty * (~geom)
    matching = torch.zeros_like(cost, dtype=torch.uint8)
    topk_ious, _ = torch.topk(ious, min(10, n), dim=1)
    ks = torch.clamp(topk_ious.sum(1).int(), min=1).tolist()
    for gi in range(g):
        _, pos = torch.topk(cost[gi], k=ks[gi], largest=False)
        matching[gi][pos] = 1
    multi = matching.sum(0) > 1
    if multi.sum() > 0:
        _, argmin = torch.min(cost[:, multi], dim=0)
        matching[:, multi] *= 0
        matching[argmin, multi] = 1
    fg_in = matching.sum(0) > 0
    fg_full = fg_mask.clone()
    fg_full[fg_mask.clone()] = fg_in
    matched = matching[:, fg_in].argmax(0)
    iou_m = (matching * ious).sum(0)[fg_in]
    return fg_full, matched, iou_m


def realistic_inputs(seed, img=256, num_gt=8, num_classes=5):
    """Predictions scattered around the GTs so that SimOTA has real choices to make."""
    g = torch.Generator().manual_seed(seed)
    grids, strides = anchor_grid_for_input(img, img)
    a = grids.shape[0]
    gt_wh = torch.rand(num_gt, 2, generator=g) * img / 3 + 4
    gt_xy = torch.rand(num_gt, 2, generator=g) * img
    gt = torch.cat([gt_xy, gt_wh], 1)
    centers = reference.anchor_centers(grids, strides)
    pred_xy = centers + torch.randn(a, 2, generator=g) * strides[:, None]
    pred_wh = strides[:, None] * torch.exp(torch.randn(a, 2, generator=g)) * 3
    pred = torch.cat([pred_xy, pred_wh], 1)
    cls = torch.randn(a, num_classes, generator=g) * 2
    obj = torch.randn(a, 1, generator=g) * 2
    gt_cls = torch.randint(0, num_classes, (num_gt,), generator=g)
    return pred, cls, obj, grids, strides, gt, gt_cls


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_simota_reference_equals_official_algorithm(seed, variant):
    pred, cls, obj, grids, strides, gt, gt_cls = realistic_inputs(seed, num_gt=3 + 4 * seed)
    fg, matched, iou = reference.simota_assign_image(pred, cls, obj, grids, strides, gt, gt_cls, variant)
    off_fg, off_matched, off_iou = official_assign(pred, cls, obj, grids, strides, gt, gt_cls, variant)
    assert torch.equal(fg, off_fg)
    assert torch.equal(matched[fg], off_matched)
    torch.testing.assert_close(iou[fg], off_iou, rtol=0, atol=1e-6)
    assert (matched[~fg] == -1).all() and (iou[~fg] == 0).all()
    assert fg.sum() > 0


def test_candidate_masks_by_hand():
    # One 8x8 map with stride 8 (centres at 4, 12, ..., 60); one GT centred at (32, 32), 16 wide.
    grids, strides = anchor_grid_for_input(64, 64, strides=(8,))
    centers = reference.anchor_centers(grids, strides)
    gt = torch.tensor([[32.0, 32.0, 16.0, 16.0]])
    cand, geom = reference.candidate_masks(gt, centers, strides, SEED)
    # in box: centres 28 and 36 on each axis (strictly inside 24..40) -> 2x2 anchors;
    # in the centre square 32 +- 20 (strictly inside 12..52): centres 20, 28, 36, 44 -> 4x4 anchors.
    xs = centers[cand][:, 0].unique().tolist()
    assert xs == [20.0, 28.0, 36.0, 44.0]
    assert geom.sum() == 4  # box AND square
    cand_c, geom_c = reference.candidate_masks(gt, centers, strides, CENTER)
    assert cand_c.sum() == 4 and torch.equal(geom_c[0], cand_c)  # 32 +- 12: centres 28, 36


def test_dynamic_k_tie_rule():
    # Three anchors of equal cost; GT 0 takes k = 2 of them: the two lowest indices.
    cost = torch.tensor([[5.0, 1.0, 1.0, 1.0]])
    iou = torch.tensor([[0.9, 0.6, 0.6, 0.1]])  # sum 2.2 -> k = 2
    assert reference.dynamic_k_matching(cost, iou).tolist() == [-1, 0, 0, -1]
    # Two GTs tie on a contested anchor: the lower GT index wins it.
    cost = torch.tensor([[1.0, 2.0], [1.0, 3.0]])
    iou = torch.tensor([[0.5, 0.4], [0.5, 0.1]])  # k = 1 each, both take anchor 0
    assert reference.dynamic_k_matching(cost, iou).tolist() == [0, -1]


def test_contested_anchor_goes_to_cheapest_gt_even_if_it_did_not_pick_it():
    # GT 2 does not select anchor 0 (its own k=1 goes to anchor 1) but has the lowest cost there.
    cost = torch.tensor([[1.0, 9.0, 9.0], [1.5, 9.0, 9.0], [0.5, 0.1, 9.0]])
    iou = torch.full((3, 3), 0.3)
    assert reference.dynamic_k_matching(cost, iou).tolist() == [2, 2, -1]


def test_batched_reference_maps_padded_indices():
    pred, cls, obj, grids, strides, gt, gt_cls = realistic_inputs(7, num_gt=4)
    gt_pad = torch.zeros(2, 6, 4)
    cls_pad = torch.zeros(2, 6, dtype=torch.long)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    slots = [1, 2, 4, 5]  # real GTs of image 0 in non-leading slots; image 1 has none
    gt_pad[0, slots], cls_pad[0, slots], mask[0, slots] = gt, gt_cls, True
    fg, matched, iou = reference.simota_assign(
        pred[None].repeat(2, 1, 1), cls[None].repeat(2, 1, 1), obj[None].repeat(2, 1, 1), grids, strides, gt_pad,
        cls_pad, mask,
    )
    fg0, m0, iou0 = reference.simota_assign_image(pred, cls, obj, grids, strides, gt, gt_cls)
    assert torch.equal(fg[0], fg0) and torch.equal(iou[0], iou0)
    assert torch.equal(matched[0][fg0], torch.tensor(slots)[m0[fg0]])
    assert not fg[1].any() and (matched[1] == -1).all()


def test_loss_targets():
    fg = torch.tensor([False, True, True])
    matched = torch.tensor([-1, 1, 0])
    iou = torch.tensor([0.0, 0.5, 0.25])
    gt = torch.tensor([[16.0, 16.0, 8.0, 8.0], [40.0, 8.0, 32.0, 16.0]])
    t = reference.loss_targets_image(fg, matched, iou, gt, torch.tensor([2, 0]), torch.tensor([[0.0, 0.0], [4.0, 1.0],
                                     [1.0, 1.0]]), torch.tensor([8.0, 8.0, 16.0]), num_classes=3)
    assert t["cls"].tolist() == [[0.5, 0.0, 0.0], [0.0, 0.0, 0.25]]
    assert t["obj"].squeeze(1).tolist() == [0.0, 1.0, 1.0]
    torch.testing.assert_close(t["l1"][0], torch.tensor([40 / 8 - 4, 8 / 8 - 1, 1.3862944, 0.6931472]))


# ---------------------------------------------------------------------------------------------
# NMS and postprocess
# ---------------------------------------------------------------------------------------------


def brute_force_nms(boxes, scores, thr):
    """Keep a box iff no kept, higher-scored box overlaps it by IoU > thr (straight from the definition)."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    kept = []
    for i in order:
        ok = True
        for j in kept:
            x1 = max(boxes[i][0], boxes[j][0])
            y1 = max(boxes[i][1], boxes[j][1])
            x2 = min(boxes[i][2], boxes[j][2])
            y2 = min(boxes[i][3], boxes[j][3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            area_i = (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])
            area_j = (boxes[j][2] - boxes[j][0]) * (boxes[j][3] - boxes[j][1])
            if inter / (area_i + area_j - inter) > thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_reference_nms_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(200, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(200, 2, generator=g) * 30], 1).double()
    scores = torch.rand(200, generator=g).double()
    keep = reference.nms(boxes, scores, 0.5)
    assert keep.tolist() == brute_force_nms(boxes.tolist(), scores.tolist(), 0.5)


def test_nms_threshold_is_strict():
    # IoU exactly 1/3: kept at threshold 1/3 (suppressed only above it), suppressed below.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    assert reference.nms(boxes, scores, 1 / 3).tolist() == [0, 1]
    assert reference.nms(boxes, scores, 0.3).tolist() == [0]


def test_batched_nms_is_per_class():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.5, 0.9, 0.7])
    assert reference.batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [1, 2]
    assert reference.nms(boxes, scores, 0.5).tolist() == [1]


def test_postprocess_format():
    pred = torch.zeros(2, 4, 5 + 3)
    pred[0, :, :4] = torch.tensor([[10.0, 10, 4, 4], [10.5, 10, 4, 4], [50, 50, 10, 10], [80, 80, 2, 2]])
    pred[0, :, 4] = torch.tensor([0.9, 0.8, 0.9, 0.01])
    pred[0, :, 5:] = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0], [1.0, 0, 0]])
    out = reference.postprocess(pred, 3, conf_thre=0.5, nms_thre=0.45)
    assert out[1] is None
    det = out[0]
    assert det.shape == (3, 7)
    assert det[:, 6].tolist() == [2.0, 0.0, 1.0]  # by score 0.9, 0.81, 0.72
    torch.testing.assert_close(det[1, :4], torch.tensor([8.0, 8.0, 12.0, 12.0]))
    agnostic = reference.postprocess(pred, 3, conf_thre=0.5, nms_thre=0.45, class_agnostic=True)[0]
    assert agnostic[:, 6].tolist() == [2.0, 0.0]
