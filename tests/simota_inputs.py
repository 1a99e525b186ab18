"""Realistic random SimOTA batches, shared by the tests and the benchmarks.

A test helper, so it lives with the tests: ``tests/`` is on pytest's ``pythonpath`` (pyproject.toml), and
tests and benchmarks import it as ``from simota_inputs import random_simota_batch``.

Random logits and boxes alone make SimOTA trivial (no prediction overlaps a GT, every cost is about
the same). Here predictions look like a half-trained detector's: most anchors predict a jittered copy
of the GT nearest to them, with a raised logit for its class, so IoUs, dynamic k and conflicts all
vary. GT sizes range from a few pixels (GTs with no candidate, or fewer geometry anchors than k) to
half the image, and some GTs lie partly or wholly outside it.
"""

from __future__ import annotations

import torch

from yolox_fast.ops.anchors import anchor_grid
from yolox_fast.ops.simota_batch import SimOTABatch  # the one definition, re-exported for the tests

__all__ = ["SimOTABatch", "random_simota_batch", "feature_sizes_for_anchors"]


def feature_sizes_for_anchors(num_anchors: int) -> list[tuple[int, int]]:
    """Three square-ish levels (strides 8, 16, 32) with exactly ``num_anchors`` anchors in all.

    ``8400`` gives the 640x640 layout (80x80, 40x40, 20x20) and ``33600`` the 1280x1280 one; other
    counts keep the 16:4:1 proportions as closely as possible with whole rows.
    """
    for side in range(1, 4096):
        if 21 * side * side == num_anchors:  # (4s)^2 + (2s)^2 + s^2 with s = input / 32
            return [(4 * side, 4 * side), (2 * side, 2 * side), (side, side)]
    n3 = max(1, round(num_anchors / 21))
    n2 = max(1, round(num_anchors * 4 / 21))
    n1 = num_anchors - n2 - n3
    if n1 < 1:
        return [(1, num_anchors)]
    return [(1, n1), (1, n2), (1, n3)] if n1 < 8 else [_rows(n1), _rows(n2), _rows(n3)]


def _rows(n: int) -> tuple[int, int]:
    w = max(1, int(n**0.5))
    while n % w:
        w -= 1
    return (n // w, w)


@torch.no_grad()
def random_simota_batch(
    batch: int,
    num_gt: int,
    num_classes: int = 80,
    num_anchors: int = 8400,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    fill: float = 1.0,
    device: torch.device | str = "cpu",
    outside: float = 0.05,
) -> SimOTABatch:
    """A padded batch of ``batch`` images with up to ``num_gt`` GTs each.

    Args:
        batch: B.
        num_gt: G, the padded GT axis; each image has ``round(fill * G)`` real GTs or fewer (image 0
            always exactly that many; others a random count), at random positions of the axis.
        num_classes: C.
        num_anchors: A (see :func:`feature_sizes_for_anchors`).
        seed: everything is drawn from ``torch.Generator().manual_seed(seed)``.
        dtype: dtype of the predictions (boxes, logits); GTs are float32.
        fill: fraction of the G axis that holds real GTs in the first image.
        device: where the tensors go (drawn on the CPU).
        outside: fraction of GTs moved partly or wholly outside the image.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(shape, generator=gen)

    def randn(*shape):
        return torch.randn(shape, generator=gen)

    sizes = feature_sizes_for_anchors(num_anchors)
    grids, strides = anchor_grid(sizes, (8, 16, 32)[: len(sizes)])
    a = grids.shape[0]
    centers = (grids + 0.5) * strides[:, None]
    level_strides = (8, 16, 32)[: len(sizes)]
    img_w = float(max(w * s for (_, w), s in zip(sizes, level_strides, strict=True)))
    img_h = float(max(h * s for (h, _), s in zip(sizes, level_strides, strict=True)))
    scale = torch.tensor([img_w, img_h])

    # GTs: log-uniform sizes from 2 px to 60% of the image, aspect ratio 1:3 to 3:1.
    g = num_gt
    n_real = torch.full((batch,), round(fill * g), dtype=torch.long)
    if batch > 1:
        n_real[1:] = (rand(batch - 1) * (n_real[0] + 1)).long().clamp(max=g)
    gt_mask = torch.zeros(batch, g, dtype=torch.bool)
    for b in range(batch):
        gt_mask[b, torch.randperm(g, generator=gen)[: int(n_real[b])]] = True
    lo, hi = torch.log(torch.tensor(2.0)), torch.log(0.6 * scale.min())
    side = torch.exp(lo + rand(batch, g) * (hi - lo))
    aspect = torch.exp((rand(batch, g) * 2 - 1) * 1.1)
    wh = torch.stack([side * aspect.sqrt(), side / aspect.sqrt()], dim=-1)
    xy = rand(batch, g, 2) * scale
    out = rand(batch, g) < outside
    xy = torch.where(out[..., None], xy + (rand(batch, g, 2) * 2 - 1) * scale * 0.7, xy)
    gt_boxes = torch.cat([xy, wh], dim=-1)
    gt_boxes = torch.where(gt_mask[..., None], gt_boxes, torch.zeros_like(gt_boxes))
    gt_classes = torch.where(gt_mask, (rand(batch, g) * num_classes).long(), torch.zeros(batch, g, dtype=torch.long))

    # Predictions: each anchor predicts its nearest real GT (70%), jittered, or a box of its own.
    pred = torch.empty(batch, a, 4)
    pred[..., :2] = centers + randn(batch, a, 2) * strides[:, None] * 0.7
    pred[..., 2:] = strides[:, None] * torch.exp(1.2 + randn(batch, a, 2))
    cls = randn(batch, a, num_classes) * 1.5 - 4.0
    obj = randn(batch, a, 1) * 2.0 - 1.0
    for b in range(batch):
        real = gt_mask[b].nonzero().squeeze(1)
        if real.numel() == 0:
            continue
        boxes = gt_boxes[b, real]
        nearest = torch.empty(a, dtype=torch.long)
        for s in range(0, a, 4096):  # [chunk, G] distances, so memory stays small for big G
            d = torch.cdist(centers[s : s + 4096], boxes[:, :2])
            nearest[s : s + 4096] = d.argmin(dim=1)
        target = boxes[nearest]
        use = rand(a) < 0.7
        jitter = torch.cat([randn(a, 2) * 0.15 * target[:, 2:], target[:, 2:] * torch.exp(randn(a, 2) * 0.25)], dim=1)
        jittered = torch.cat([target[:, :2] + jitter[:, :2], jitter[:, 2:]], dim=1)
        pred[b] = torch.where(use[:, None], jittered, pred[b])
        cls_id = gt_classes[b, real][nearest]
        cls[b, torch.arange(a), cls_id] += torch.where(use, rand(a) * 6.0, torch.zeros(a))
        obj[b, :, 0] += torch.where(use, rand(a) * 3.0, torch.zeros(a))

    batch_ = SimOTABatch(pred.to(dtype), cls.to(dtype), obj.to(dtype), grids, strides, gt_boxes, gt_classes, gt_mask)
    return batch_.to(device) if torch.device(device).type != "cpu" else batch_


def tied_simota_batch(num_anchors: int, gt_mask: torch.Tensor, seed: int) -> SimOTABatch:
    """Two images in which every anchor predicts the same box and the same logits, GT 1 duplicates GT 0 and
    GT 3 overlaps both: equal costs everywhere, so the result is decided by the tie rules alone
    (docs/design.md: lowest anchor index first; a contested anchor to the lowest GT index).

    ``gt_mask [2, 4]`` bool picks the GTs present in each image."""
    a = num_anchors
    return random_simota_batch(2, 4, 3, a, seed=seed)._replace(
        pred_boxes=torch.tensor([60.0, 50.0, 30.0, 40.0]).expand(2, a, 4).clone(),
        cls_logits=torch.full((2, a, 3), -1.0),
        obj_logits=torch.zeros(2, a, 1),
        gt_boxes=torch.tensor([[[60.0, 50.0, 32.0, 40.0], [60.0, 50.0, 32.0, 40.0], [10.1, 90.3, 0.5, 0.5],
                                [62.0, 49.0, 28.0, 44.0]]]).expand(2, 4, 4).clone(),
        gt_classes=torch.tensor([[0, 0, 2, 0]]).expand(2, 4).clone(),
        gt_mask=gt_mask,
    )
