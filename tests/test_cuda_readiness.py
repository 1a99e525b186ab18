"""CUDA ops fixed for issue 8 before any GPU ran them (the fixes are compile-checked on the CPU: sm_80 and
sm_90 builds with ptxas figures; these tests run them on a GPU, scripts/gpu_check.sh):

* float64 postprocess ties go by class, then anchor (the sort key holds the score only; a pre-sort);
* nms / batched_nms sort one large segment with a device-wide radix sort (and postprocess with B = 1);
* pairwise_iou takes any number of rows (rows strided over gridDim.y, capped at 65535).

Without a GPU, tests/infrastructure/test_cuda_device_code.py checks the compiled device code for the same three fixes.
"""

from __future__ import annotations

import pytest
import torch

from tests.test_ops_postprocess import make_prediction
from yolox_fast.ops import _extension, batched_nms, nms, postprocess, postprocess_padded, reference
from yolox_fast.ops.iou import pairwise_iou
from yolox_fast.ops.postprocess import _postprocess_image_spec

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available() or not _extension.cuda_built(),
                                                  reason="needs a CUDA GPU and yolox_fast._C built with CUDA")]


@pytest.mark.parametrize("batch", [1, 3])
def test_float64_ties_go_by_class_then_anchor(batch):
    pred = torch.zeros(batch, 4, 5 + 8, dtype=torch.float64)
    pred[:, :, :4] = torch.tensor([[10.0, 10, 4, 4], [50, 50, 4, 4], [90, 90, 4, 4], [130, 130, 4, 4]])
    pred[:, :, 4] = 1.0
    pred[:, 0, 5 + 5] = pred[:, 1, 5 + 2] = pred[:, 3, 5 + 2] = 0.5
    pred[:, 2, 5 + 1] = 0.25
    expected = _postprocess_image_spec(pred[0], 8, 0.1, 0.45, False, False, 0, 2)
    assert expected[:, 6].tolist() == [2.0, 2.0]
    dets, counts = postprocess_padded(pred.cuda(), 8, 0.1, 0.45, max_det=2, backend="cuda")
    for b in range(batch):
        assert int(counts[b]) == 2 and torch.equal(dets[b].cpu(), expected)
    out = postprocess(pred.cuda(), 8, 0.1, 0.45, backend="cuda")
    assert all(o[:, 6].tolist() == [2.0, 2.0, 5.0, 1.0] for o in out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_single_image_postprocess_matches_reference(dtype):
    pred = make_prediction(batch=1, size=640, seed=7, dtype=dtype)
    got = postprocess(pred.cuda(), 80, 0.01, 0.45, backend="cuda")
    want = reference.postprocess(pred, 80, 0.01, 0.45)
    assert torch.equal(got[0].cpu(), want[0])


def test_nms_one_large_segment():
    g = torch.Generator().manual_seed(0)
    n = 60000
    xy = torch.rand(n, 2, generator=g) * 2000
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 60 + 1], 1)
    scores = torch.rand(n, generator=g)
    scores[::10] = 0.5  # ties: kept in index order
    idxs = torch.randint(0, 80, (n,), generator=g)
    # judged by the C++ op (held to the reference in tests/test_ops_nms.py): the Python reference takes minutes
    # over 60,000 boxes, the GPU check has seconds
    judge = "cpu" if _extension.extension_loaded() else "reference"
    assert torch.equal(nms(boxes.cuda(), scores.cuda(), 0.5, backend="cuda").cpu(),
                       nms(boxes, scores, 0.5, backend=judge))
    assert torch.equal(batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5, backend="cuda").cpu(),
                       batched_nms(boxes, scores, idxs, 0.5, backend=judge))


def test_pairwise_iou_more_than_65535_rows():
    g = torch.Generator().manual_seed(1)
    a = torch.cat([torch.rand(70000, 2, generator=g) * 600, torch.rand(70000, 2, generator=g) * 100 + 1], 1)
    b = torch.cat([torch.rand(300, 2, generator=g) * 600, torch.rand(300, 2, generator=g) * 100 + 1], 1)
    assert torch.equal(pairwise_iou(a.cuda(), b.cuda(), backend="cuda").cpu(), reference.pairwise_iou(a, b))
