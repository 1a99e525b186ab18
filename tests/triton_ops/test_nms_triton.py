"""Triton postprocess and NMS against the reference.

On a CPU these run under the Triton interpreter, which must be switched on before triton is imported,
so in their own process: ``TRITON_INTERPRET=1 python -m pytest tests/triton_ops``. Shapes stay small there.
With a CUDA GPU they run compiled, on the GPU.
"""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip("Triton kernels need a CUDA GPU, or TRITON_INTERPRET=1 (set before triton is imported: run "
                "`TRITON_INTERPRET=1 python -m pytest tests/triton_ops` in its own process)", allow_module_level=True)
pytest.importorskip("triton")

from tests.test_ops_postprocess import assert_same_detections, make_prediction  # noqa: E402
from yolox_fast.ops import batched_nms, nms, postprocess, postprocess_padded, reference  # noqa: E402
from yolox_fast.ops.postprocess import _postprocess_image_spec  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
# numpy warns about 0 * inf and 0 / 0 in masked-off lanes under the interpreter
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def small_prediction(**kw):
    kw = {"batch": 2, "size": 64, "num_classes": 8, "hot": 12, "seed": 0, **kw}
    out = make_prediction(**kw)
    if kw.get("raw"):
        return tuple(t.to(DEVICE) for t in out)
    return out.to(DEVICE)


def cpu(outputs):
    return [None if o is None else o.cpu() for o in outputs]


BF16 = pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    DEVICE == "cpu", reason="the Triton interpreter truncates float32 -> bfloat16 instead of rounding to nearest"))


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, BF16, torch.float64])
def test_postprocess_matches_reference(agnostic, dtype):
    pred = small_prediction(seed=1, dtype=dtype)
    before = pred.clone()
    ref = reference.postprocess(pred.cpu(), 8, 0.01, 0.45, agnostic)
    out = postprocess(pred, 8, 0.01, 0.45, agnostic, backend="triton")
    assert_same_detections(cpu(out), ref)
    assert torch.equal(pred, before)


def test_postprocess_edge_cases():
    pred = small_prediction(seed=2)
    assert postprocess(pred, 8, 1.01, backend="triton") == [None, None]
    assert postprocess(pred[:, :0], 8, backend="triton") == [None, None]
    p = pred.clone()
    p[0, :, 2:4] = 0.0  # zero-area boxes never suppress
    p[1, :, :4] *= 1e6  # huge coordinates
    top = (p[0, :, 4] * p[0, :, 5:].max(1).values).argsort(descending=True)
    p[0, top[0], 4] = float("nan")  # NaN score: dropped (the reference's rule)
    p[0, top[1], 4] = float("inf")  # +inf: kept, first
    assert_same_detections(cpu(postprocess(p, 8, 0.01, 0.3, backend="triton")),
                           reference.postprocess(p.cpu(), 8, 0.01, 0.3))


def test_postprocess_thresholds_inclusive_and_strict():
    pred = torch.zeros(1, 3, 6)
    pred[0, :, :4] = torch.tensor([[1.5, 0.5, 3.0, 1.0], [2.5, 0.5, 3.0, 1.0], [10.5, 0.5, 3.0, 1.0]])
    pred[0, :, 4] = torch.tensor([1.0, 0.5, 0.25])
    pred[0, :, 5] = torch.tensor([0.75, 1.0, 1.0])
    (det,) = postprocess(pred.to(DEVICE), 1, 0.25, 0.5, backend="triton")
    assert det[:, 4].tolist() == [1.0, 0.5, 0.25]
    (det,) = postprocess(pred.to(DEVICE), 1, 0.25, 0.49, backend="triton")
    assert det[:, 4].tolist() == [1.0, 0.25]


@pytest.mark.parametrize("agnostic", [False, True])
def test_raw_input(agnostic):
    raw, grids, strides = small_prediction(seed=3, raw=True)
    ref = reference.postprocess(reference.decode_outputs(raw.cpu(), grids.cpu(), strides.cpu()), 8, 0.01, 0.45,
                                agnostic)
    out = postprocess(raw, 8, 0.01, 0.45, agnostic, grids=grids, strides=strides, backend="triton")
    assert_same_detections(cpu(out), ref, exact=False)


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("multi_label,topk,max_det", [(True, 0, 0), (False, 6, 0), (True, 20, 5)])
def test_options_and_padded(agnostic, multi_label, topk, max_det):
    pred = small_prediction(seed=4)
    expected = []
    for p in pred.cpu():
        d = _postprocess_image_spec(p, 8, 0.02, 0.45, agnostic, multi_label, topk, max_det)
        expected.append(d if d.shape[0] else None)
    out = postprocess(pred, 8, 0.02, 0.45, agnostic, backend="triton", multi_label=multi_label,
                      pre_nms_topk=topk or None, max_det=max_det or None)
    assert_same_detections(cpu(out), expected)
    dets, counts = postprocess_padded(pred, 8, 0.02, 0.45, agnostic, multi_label=multi_label,
                                      pre_nms_topk=topk or None, max_det=max_det or 30, backend="triton")
    assert dets.shape == (2, max_det or 30, 7)
    for b in range(2):
        n = int(counts[b])
        assert not dets[b, n:].any()
        if expected[b] is not None:
            assert torch.equal(dets[b, :n].cpu(), expected[b][: max_det or 30])


@pytest.mark.parametrize("n", [0, 1, 70, 200])
def test_nms_matches_reference(n):
    g = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 40 + 1], 1)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, 3, (n,), generator=g)
    assert torch.equal(nms(boxes.to(DEVICE), scores.to(DEVICE), 0.5, backend="triton").cpu(),
                       reference.nms(boxes, scores, 0.5))
    assert torch.equal(batched_nms(boxes.to(DEVICE), scores.to(DEVICE), idxs.to(DEVICE), 0.5, backend="triton").cpu(),
                       reference.batched_nms(boxes, scores, idxs, 0.5))


def test_nms_edge_cases():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 80.0]]).repeat(5, 1).to(DEVICE)
    assert nms(boxes, torch.full((5,), 0.5, device=DEVICE), 0.5, backend="triton").tolist() == [0]
    pts = torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0]], device=DEVICE)
    assert nms(pts, torch.tensor([0.9, 0.8], device=DEVICE), 0.1, backend="triton").tolist() == [0, 1]
    at = torch.tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]], device=DEVICE)  # IoU exactly 0.5
    assert nms(at, torch.tensor([0.9, 0.8], device=DEVICE), 0.5, backend="triton").tolist() == [0, 1]
    with pytest.raises(ValueError, match="NaN"):
        nms(at, torch.tensor([0.9, float("nan")], device=DEVICE), 0.5, backend="triton")


_COMPILE_SCRIPT = r"""
import sys
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from yolox_fast.kernels import nms as k

dtype, raw, multi = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
acc = tl.float64 if dtype == "fp64" else tl.float32
p, f = "*" + dtype, "*fp32"
kernels = [
    (k._score_kernel, dict(pred_ptr=p, conf_ptr="*" + ("fp64" if dtype == "fp64" else "fp32"), keys_ptr="*i64",
                           label_ptr="*i32", A="i32", S="i32", C="i32", L="i32"),
     dict(RAW=raw, MULTI=multi, AGNOSTIC=False, ACC=acc, BLOCK_R=32, BLOCK_C=128)),
    (k._gather_kernel, dict(pred_ptr=p, grids_ptr=f, strides_ptr=f, order_ptr="*i32", label_ptr="*i32",
                            n_ptr="*i64", boxes_ptr=f, cls_ptr="*i64", anchor_ptr="*i32", A="i32", S="i32",
                            C="i32", L="i32", cap="i32"),
     dict(RAW=raw, MULTI=multi, AGNOSTIC=True, ACC=acc, BLOCK=128)),
    (k._rows_kernel, dict(pred_ptr=p, grids_ptr=f, strides_ptr=f, keep_ptr="*i32", count_ptr="*i64",
                          cls_ptr="*i64", anchor_ptr="*i32", out_ptr=p, A="i32", S="i32", cap="i32", limit="i32",
                          M="i32"),
     dict(RAW=raw, ACC=acc, BLOCK=64)),
    (k._nms_mask_kernel, dict(boxes_ptr=f, cls_ptr="*i64", n_ptr="*i64", mask_ptr="*i64", cap="i32",
                              words="i32", thr="fp32"), dict(HAS_CLS=True, TILE_=k.TILE)),
    (k._nms_reduce_kernel, dict(mask_ptr="*i64", n_ptr="*i64", keep_ptr="*i32", count_ptr="*i64", cap="i32",
                                words="i32", limit="i32"), dict(BLOCK_W=256, TILE_=k.TILE)),
]
for fn, sig, const in kernels:
    sig = {**sig, **{name: "constexpr" for name in const}}
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const), target=GPUTarget("cuda", 90, 32),
                   options={"enable_fp_fusion": False})
"""


@pytest.mark.slow
@pytest.mark.parametrize("dtype,raw,multi", [("fp32", False, False), ("fp16", True, True), ("fp64", True, False)])
def test_kernels_compile_for_hopper(dtype, raw, multi):
    """The interpreter runs the kernels with NumPy and misses compile errors (dtype rules of tl.math,
    control flow): compile every kernel for sm_90 too, which needs no GPU. In a separate process,
    because TRITON_INTERPRET=1 replaces triton.jit in this one."""
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT, dtype, str(int(raw)), str(int(multi))], env=env,
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
