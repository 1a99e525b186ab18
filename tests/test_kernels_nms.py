"""The Triton bitmask NMS kernels (kernels/nms.py) at the kernel level; the ops' results on every backend are
in tests/test_ops_nms.py and tests/test_ops_postprocess.py. Marked ``triton`` (tests/op_testing.py)."""

from __future__ import annotations

import pytest
import torch
from op_testing import triton_device, triton_only

from yolox_fast.ops import reference

DEVICE = triton_device()
pytestmark = [*triton_only, pytest.mark.filterwarnings("ignore::RuntimeWarning")]


def test_mask_kernel_visits_only_tiles_within_the_count():
    """The NMS mask grid is sized by the capacity but each problem's work by its count (read on the device):
    tiles past the count and below the diagonal are never touched, the others hold the suppression bits."""
    import triton

    from yolox_fast.kernels import nms as k

    cap, n = 400, [70, 0, 130]
    words = triton.cdiv(cap, k.TILE)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(3, cap, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(3, cap, 2, generator=g) * 40 + 1], 2).contiguous()
    sentinel = 0x5A5A5A5A
    mask = torch.full((3, cap, words), sentinel, dtype=torch.int64)
    # on the kernels' device (compiled Triton cannot read CPU tensors: issue 15), the results back on the CPU
    mask_dev = mask.to(DEVICE)
    keep, count = k.launch_nms(boxes.to(DEVICE), None, torch.tensor(n, device=DEVICE), cap, 0.3, 1000, mask=mask_dev)
    keep, count, mask = keep.cpu(), count.cpu(), mask_dev.cpu()
    for p, m in enumerate(n):
        iou = reference.pairwise_iou(boxes[p, :m], boxes[p, :m], "xyxy")
        nb = triton.cdiv(m, k.TILE)
        assert (mask[p, m:] == sentinel).all()
        for i in range(m):
            for w in range(words):
                word = int(mask[p, i, w])
                if w < i // k.TILE or w >= nb:
                    assert word == sentinel, (p, i, w)  # below the diagonal or past the count: not touched
                    continue
                bits = [j for j in range(k.TILE) if (word >> j) & 1]
                expected = [j - w * k.TILE for j in range(w * k.TILE, min(m, (w + 1) * k.TILE))
                            if j > i and iou[i, j] > 0.3]
                assert bits == expected, (p, i, w)
        by_rank = -torch.arange(m, dtype=torch.float32)  # scores in priority order
        assert torch.equal(keep[p, : int(count[p])].long(), reference.nms(boxes[p, :m], by_rank, 0.3))
