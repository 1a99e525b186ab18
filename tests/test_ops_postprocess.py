"""postprocess / postprocess_padded (yolox_fast/ops/postprocess.py): every backend against the official
per-image reference (backends and devices: tests/op_testing.py; the cases run through run_postprocess and
run_postprocess_padded, which put the inputs on the backend's device and bring the outputs back).

Decoded input (the model's eval output) must give exactly the reference's detections, bit for bit and
in the same order (equal scores: class then anchor, class-aware; anchor, class-agnostic). Raw input
(decode fused in) agrees within 1e-6: PyTorch's vectorised exp/sigmoid may differ in the last bit.
"""

from __future__ import annotations

from pathlib import Path

import op_testing
import pytest
import torch
from op_testing import INTERPRET, backend_params, needs_cuda, needs_ext, on_device, to_cpu

from yolox_fast.ops import (
    _extension,
    anchor_grid_for_input,
    backends,
    padded_to_list,
    postprocess,
    postprocess_padded,
    reference,
)
from yolox_fast.ops.postprocess import _postprocess_image_spec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

OP = "postprocess"
#: the compiled and batched backends (cases too big for the reference's per-image Python NMS)
FAST_BACKENDS = backend_params(OP, ("cpu", "torch", "cuda", "triton"))
ALL_BACKENDS = backend_params(OP)


def _device_kw(backend, kw):
    return {k: on_device(v, backend or "cpu") if k in ("grids", "strides") else v for k, v in kw.items()}


def run_postprocess(prediction, *args, backend=None, **kw):
    """``postprocess`` of ``backend`` with its inputs on the backend's device; detections back on the CPU."""
    return to_cpu(postprocess(on_device(prediction, backend or "cpu"), *args, backend=backend,
                              **_device_kw(backend, kw)))


def run_postprocess_padded(prediction, *args, backend=None, **kw):
    """``postprocess_padded`` as :func:`run_postprocess`: ``(detections [B, M, 7], counts [B])`` on the CPU."""
    return to_cpu(postprocess_padded(on_device(prediction, backend or "cpu"), *args, backend=backend,
                                     **_device_kw(backend, kw)))


def big_case(backend):
    """A 320 x 320 input with 80 classes: natively on a GPU only (the interpreter runs the same checks at a
    small size in tests/test_kernels_postprocess.py)."""
    op_testing.big_case(backend, "tests/test_kernels_postprocess.py")


def no_bf16_in_interpreter(backend, dtype):
    if backend == "triton" and INTERPRET and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter truncates float32 -> bfloat16 instead of rounding to nearest")


def make_prediction(batch=2, size=320, num_classes=80, hot=40, seed=0, dtype=torch.float32, raw=False):
    """A realistic head output for a ``size x size`` input: most scores tiny, ``hot`` anchors per image
    with a confident class, boxes clustered so that NMS has work. Decoded unless ``raw``."""
    g = torch.Generator().manual_seed(seed)
    grids, strides = anchor_grid_for_input(size, size)
    a = grids.shape[0]
    t = torch.randn(batch, a, 5 + num_classes, generator=g)
    t[..., :2] = t[..., :2] * 0.3 + 0.5
    t[..., 2:4] = t[..., 2:4] * 0.5 + 1.0
    t[..., 4] = t[..., 4] * 1.5 - 6.0  # objectness logits: sigmoid ~ 0.0025
    t[..., 5:] = t[..., 5:] * 1.5 - 5.0
    for b in range(batch):
        idx = torch.randperm(a, generator=g)[:hot]
        t[b, idx, 4] = torch.rand(hot, generator=g) * 6 - 1
        t[b, idx, 5 + torch.randint(0, num_classes, (hot,), generator=g)] = torch.rand(hot, generator=g) * 6
        # neighbours of a hot anchor: same object seen again, so NMS suppresses
        nb = (idx + 1).clamp(max=a - 1)
        t[b, nb] = t[b, idx] + 0.05 * torch.randn(hot, 5 + num_classes, generator=g)
    if raw:
        return t.to(dtype), grids, strides
    return reference.decode_outputs(t, grids, strides).to(dtype)


def assert_same_detections(out, ref, exact=True):
    assert len(out) == len(ref)
    for o, r in zip(out, ref, strict=True):
        assert (o is None) == (r is None), (None if o is None else o.shape, None if r is None else r.shape)
        if r is None:
            continue
        assert o.dtype == r.dtype and o.shape == r.shape, (o.shape, r.shape)
        if exact:  # bit for bit (NaN coordinates compare equal)
            torch.testing.assert_close(o, r, rtol=0, atol=0, equal_nan=True)
        else:
            # Raw input: exp/sigmoid may differ from PyTorch's in the last bit. Scores within 1e-6; box
            # corners within 1e-6 of the box scale (x1 = cx - w / 2 cancels: relative error grows near 0).
            scale = float(r[:, :4].abs().max().clamp(min=1))
            torch.testing.assert_close(o[:, :4], r[:, :4], rtol=1e-6, atol=1e-6 * scale, equal_nan=True)
            torch.testing.assert_close(o[:, 4:6], r[:, 4:6], rtol=1e-6, atol=1e-6)
            assert torch.equal(o[:, 6], r[:, 6])


# --------------------------------------------------------------------------------------------------
# The official function
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("conf", [0.001, 0.05, 0.3])
@pytest.mark.parametrize("agnostic", [False, True])
def test_matches_reference(backend, conf, agnostic):
    big_case(backend)
    pred = make_prediction(batch=2, seed=1)
    before = pred.clone()
    ref = reference.postprocess(pred, 80, conf, 0.45, agnostic)
    out = run_postprocess(pred, 80, conf, 0.45, agnostic, backend=backend)
    assert_same_detections(out, ref)
    assert torch.equal(pred, before), "the input was modified"
    assert all(r is not None and r.shape[0] > 1 for r in ref)  # the case has detections to compare


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_match_reference(backend, dtype):
    big_case(backend)
    no_bf16_in_interpreter(backend, dtype)
    pred = make_prediction(batch=2, seed=2, dtype=dtype)
    for agnostic in (False, True):
        assert_same_detections(run_postprocess(pred, 80, 0.01, 0.5, agnostic, backend=backend),
                               reference.postprocess(pred, 80, 0.01, 0.5, agnostic))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_non_contiguous_and_extra_columns(backend):
    big_case(backend)
    pred = make_prediction(batch=2, num_classes=20, seed=3)
    wide = torch.cat([pred, torch.rand(*pred.shape[:2], 3)], -1)  # 3 extra trailing columns
    strided = wide.transpose(0, 1).contiguous().transpose(0, 1)
    assert not strided.is_contiguous()
    before = strided.clone()
    assert_same_detections(run_postprocess(strided, 20, 0.01, 0.5, backend=backend),
                           reference.postprocess(pred, 20, 0.01, 0.5))
    assert torch.equal(strided, before)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_empty_inputs(backend):
    big_case(backend)
    assert run_postprocess(torch.zeros(2, 0, 85), 80, backend=backend) == [None, None]
    assert run_postprocess(torch.zeros(0, 10, 85), 80, backend=backend) == []
    pred = make_prediction(batch=2, seed=4)
    assert run_postprocess(pred, 80, 1.01, backend=backend) == [None, None]  # nothing above the threshold
    dets, counts = run_postprocess_padded(pred, 80, 1.01, max_det=5, backend=backend)
    assert dets.shape == (2, 5, 7) and counts.tolist() == [0, 0] and not dets.any()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_single_box_and_identical_boxes(backend):
    pred = torch.zeros(1, 6, 7)  # 2 classes
    pred[0, :, :4] = torch.tensor([50.0, 60.0, 20.0, 30.0])
    pred[0, :, 4] = 0.9
    pred[0, :, 5] = torch.tensor([0.8, 0.8, 0.8, 0.1, 0.8, 0.1])
    pred[0, :, 6] = torch.tensor([0.1, 0.1, 0.1, 0.8, 0.1, 0.2])
    # identical boxes, equal scores: the lowest anchor of each class survives (class-aware)
    (det,) = run_postprocess(pred, 2, 0.5, 0.5, backend=backend)
    assert torch.equal(det, reference.postprocess(pred, 2, 0.5, 0.5)[0])
    assert det[:, 6].tolist() == [0.0, 1.0] and det[0, :4].tolist() == [40.0, 45.0, 60.0, 75.0]
    (det,) = run_postprocess(pred, 2, 0.5, 0.5, class_agnostic=True, backend=backend)
    assert det.shape[0] == 1 and det[0, 6] == 0  # anchor 0 first among equal scores
    (det,) = run_postprocess(pred[:, :1], 2, 0.5, 0.5, backend=backend)  # one anchor
    assert det.shape == (1, 7)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_zero_area_and_huge_boxes(backend):
    big_case(backend)
    pred = make_prediction(batch=2, seed=5)
    pred[0, :, 2:4] = 0.0  # every box of image 0 is a point: nothing suppresses anything
    pred[1, :, :4] *= 1e6  # huge coordinates
    for agnostic in (False, True):
        ref = reference.postprocess(pred, 80, 0.01, 0.3, agnostic)
        assert_same_detections(run_postprocess(pred, 80, 0.01, 0.3, agnostic, backend=backend), ref)
    cand = int(((pred[0, :, 4] * pred[0, :, 5:].max(1).values) >= 0.01).sum())
    assert ref[0].shape[0] == cand


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_thousand_classes(backend):
    big_case(backend)
    pred = make_prediction(batch=2, size=128, num_classes=1000, hot=30, seed=6)
    for agnostic in (False, True):
        ref = reference.postprocess(pred, 1000, 0.01, 0.45, agnostic)
        assert_same_detections(run_postprocess(pred, 1000, 0.01, 0.45, agnostic, backend=backend), ref)
    assert ref[0][:, 6].max() > 500


@pytest.mark.parametrize("agnostic", [False, True])
def test_thirty_thousand_candidates(agnostic):
    # 1280 x 1280 input (33,600 anchors), ~30,000 candidates: too many for the reference's Python NMS,
    # so the official function with torchvision's NMS judges (rows compared as sets: ties may differ).
    tv = pytest.importorskip("torchvision")
    if not _extension.extension_loaded():
        pytest.skip("yolox_fast._C is not built")
    pred = make_prediction(batch=1, size=1280, hot=3000, seed=16)
    score = pred[..., 4] * pred[..., 5:].max(-1).values
    conf = float(score.flatten().kthvalue(score.numel() - 30_000).values)
    (det,) = run_postprocess(pred, 80, conf, 0.5, agnostic, backend="cpu")
    boxes = reference.box_cxcywh_to_xyxy(pred[0, :, :4])
    cls_conf, cls_id = pred[0, :, 5:].max(1)
    keep = score[0] >= conf
    cand = torch.cat([boxes, pred[0, :, 4:5], cls_conf[:, None], cls_id[:, None].float()], 1)[keep]
    assert cand.shape[0] >= 30_000
    s = cand[:, 4] * cand[:, 5]
    idx = tv.ops.nms(cand[:, :4], s, 0.5) if agnostic else tv.ops.batched_nms(cand[:, :4], s, cand[:, 6], 0.5)
    expected = cand[idx]
    assert det.shape == expected.shape
    assert sorted(map(tuple, det.tolist())) == sorted(map(tuple, expected.tolist()))
    got = det[:, 4] * det[:, 5]
    assert bool((got[1:] <= got[:-1]).all())


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_thresholds_are_inclusive_and_strict(backend):
    # score exactly at conf_thre is a candidate; IoU exactly at nms_thre does not suppress
    pred = torch.zeros(1, 3, 6)  # 1 class
    pred[0, :, :4] = torch.tensor([[1.5, 0.5, 3.0, 1.0], [2.5, 0.5, 3.0, 1.0], [10.5, 0.5, 3.0, 1.0]])
    pred[0, :, 4] = torch.tensor([1.0, 0.5, 0.25])
    pred[0, :, 5] = torch.tensor([0.75, 1.0, 1.0])  # scores 0.75, 0.5, 0.25
    # boxes 0 and 1: [0, 0, 3, 1] and [1, 0, 4, 1], IoU exactly 0.5
    (det,) = run_postprocess(pred, 1, 0.25, 0.5, backend=backend)
    assert det[:, 4].tolist() == [1.0, 0.5, 0.25]
    (det,) = run_postprocess(pred, 1, 0.25, 0.49, backend=backend)
    assert det[:, 4].tolist() == [1.0, 0.25]
    (det,) = run_postprocess(pred, 1, 0.2500001, 0.5, backend=backend)
    assert det[:, 4].tolist() == [1.0, 0.5]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_nan_and_inf_scores(backend):
    big_case(backend)
    # Documented rule (the reference's): a NaN objectness or ANY NaN class score gives a NaN score,
    # which fails `score >= conf` and drops the row; +inf passes and ranks first.
    pred = make_prediction(batch=1, seed=7)
    score = pred[0, :, 4] * pred[0, :, 5:].max(1).values
    top = score.argsort(descending=True)[:4]
    pred[0, top[0], 4] = float("nan")
    pred[0, top[1], 5 + 7] = float("nan")
    pred[0, top[2], 4] = float("inf")
    pred[0, top[2], :4] = torch.tensor([3000.0, 3000.0, 10.0, 10.0])  # alone: nothing to suppress
    ref = reference.postprocess(pred, 80, 0.01, 0.5)
    out = run_postprocess(pred, 80, 0.01, 0.5, backend=backend)
    assert_same_detections(out, ref)
    assert out[0][0, 4] == float("inf")
    assert not torch.isnan(out[0]).any()


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_boxes_with_non_finite_coordinates(backend):
    big_case(backend)
    pred = make_prediction(batch=1, seed=8)
    score = pred[0, :, 4] * pred[0, :, 5:].max(1).values
    top = score.argsort(descending=True)[:3]
    pred[0, top[0], 0] = float("nan")
    pred[0, top[1], 2] = float("inf")
    assert_same_detections(run_postprocess(pred, 80, 0.01, 0.5, backend=backend),
                           reference.postprocess(pred, 80, 0.01, 0.5))


# --------------------------------------------------------------------------------------------------
# Options: raw input, multi-label, top-k, max_det, padded form
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("agnostic", [False, True])
def test_raw_input_fused_decode(backend, agnostic):
    big_case(backend)
    raw, grids, strides = make_prediction(batch=2, seed=9, raw=True)
    before = raw.clone()
    ref = reference.postprocess(reference.decode_outputs(raw, grids, strides), 80, 0.01, 0.45, agnostic)
    out = run_postprocess(raw, 80, 0.01, 0.45, agnostic, grids=grids, strides=strides, backend=backend)
    assert_same_detections(out, ref, exact=backend != "cpu")
    assert_same_detections(run_postprocess(raw, 80, 0.01, 0.45, agnostic, input_size=320, backend=backend), out)
    assert torch.equal(raw, before)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("conf", [0.001, 0.25, 0.9, 0.999])
def test_raw_objectness_near_the_threshold(backend, dtype, conf):
    # The CPU kernel skips rows on the objectness logit before any exp: rows around logit(conf) must
    # still come out exactly as the reference's sigmoid-then-compare decides.
    no_bf16_in_interpreter(backend, dtype)
    n = 201
    logit = torch.logit(torch.tensor(conf, dtype=torch.float64)) + (torch.arange(n, dtype=torch.float64) - 100) * 2e-3
    raw = torch.zeros(1, n, 6, dtype=torch.float64)
    raw[0, :, 0] = torch.arange(n) * 10.0  # far apart: nothing suppressed (grids 0, stride 1)
    raw[0, :, 4] = logit
    raw[0, :, 5] = 30.0  # class score sigmoid(30) = 1
    raw = raw.to(dtype)
    grids, strides = torch.zeros(n, 2), torch.ones(n)
    (ref,) = reference.postprocess(reference.decode_outputs(raw, grids, strides), 1, conf, 0.5)
    (out,) = run_postprocess(raw, 1, conf, 0.5, grids=grids, strides=strides, backend=backend)
    assert ref is not None and out.shape == ref.shape
    if backend == "triton":  # Triton's exp (libdevice, NumPy's in the interpreter): within an ulp of PyTorch's
        torch.testing.assert_close(out[:, 4], ref[:, 4], rtol=3e-7, atol=0)
    else:
        assert torch.equal(out[:, 4], ref[:, 4])
    if dtype != torch.bfloat16:  # bfloat16(0.999) == 1.0: then every row passes
        assert ref.shape[0] < n


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_raw_input_half(backend):
    big_case(backend)
    raw, grids, strides = make_prediction(batch=2, seed=10, raw=True, dtype=torch.float16)
    ref = reference.postprocess(reference.decode_outputs(raw, grids, strides), 80, 0.01, 0.45)
    out = run_postprocess(raw, 80, 0.01, 0.45, input_size=(320, 320), backend=backend)
    assert len(out) == 2
    for o, r in zip(out, ref, strict=True):
        assert o.shape == r.shape
        torch.testing.assert_close(o, r, rtol=1e-3, atol=1e-3)  # 1 fp16 ulp


def spec(pred, num_classes, conf, nms_thre, agnostic, multi_label=False, topk=0, max_det=0):
    out = []
    for p in pred:
        d = _postprocess_image_spec(p, num_classes, conf, nms_thre, agnostic, multi_label, topk, max_det)
        out.append(d if d.shape[0] else None)
    return out


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("multi_label,topk,max_det", [(True, 0, 0), (False, 25, 0), (False, 0, 7), (True, 40, 12)])
def test_options_match_spec(backend, agnostic, multi_label, topk, max_det):
    big_case(backend)
    pred = make_prediction(batch=3, seed=11)
    expected = spec(pred, 80, 0.05, 0.45, agnostic, multi_label, topk, max_det)
    out = run_postprocess(pred, 80, 0.05, 0.45, agnostic, backend=backend, multi_label=multi_label,
                      pre_nms_topk=topk or None, max_det=max_det or None)
    assert_same_detections(out, expected)
    # the reference backend runs the same spec
    assert_same_detections(run_postprocess(pred, 80, 0.05, 0.45, agnostic, backend="reference", multi_label=multi_label,
                                       pre_nms_topk=topk or None, max_det=max_det or None), expected)
    if multi_label and not agnostic and not max_det:
        # some box carries two classes
        assert any(d is not None and len({tuple(r) for r in d[:, :4].tolist()}) < d.shape[0] for d in out)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_multi_label_raw_and_nan(backend):
    big_case(backend)
    raw, grids, strides = make_prediction(batch=2, seed=12, raw=True)
    raw[0, :50, 5] = float("nan")  # multi-label: a NaN class never passes, the others still may
    dec = reference.decode_outputs(raw, grids, strides)
    expected = spec(dec, 80, 0.02, 0.5, False, True, 0, 0)
    out = run_postprocess(raw, 80, 0.02, 0.5, backend=backend, multi_label=True, grids=grids, strides=strides)
    assert_same_detections(out, expected, exact=backend != "cpu")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_padded_form(backend):
    big_case(backend)
    pred = make_prediction(batch=3, seed=13)
    pred[1, :, 4] = 0.0  # an image without detections
    dets, counts = run_postprocess_padded(pred, 80, 0.01, 0.45, max_det=20, backend=backend)
    assert dets.shape == (3, 20, 7) and dets.dtype == pred.dtype
    assert counts.dtype == torch.long and counts.tolist()[1] == 0
    ref = spec(pred, 80, 0.01, 0.45, False, max_det=20)
    assert_same_detections(padded_to_list(dets, counts), ref)
    for b in range(3):
        assert not dets[b, counts[b]:].any()  # zero padding
    assert counts[0] == 20  # capped


def test_bad_arguments():
    pred = make_prediction(batch=1, size=64)
    with pytest.raises(ValueError, match="prediction must be"):
        postprocess(pred, 90)
    with pytest.raises(ValueError, match="grids"):
        postprocess(pred, 80, grids=torch.zeros(3, 2), strides=torch.zeros(3))
    with pytest.raises(ValueError, match="both"):
        postprocess(pred, 80, grids=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="max_det"):
        postprocess_padded(pred, 80, max_det=0)
    with pytest.raises(RuntimeError, match="not available"):
        postprocess(pred, 80, backend="cuda")


def test_backend_choice(monkeypatch):
    name, _ = backends.choose("postprocess", "cpu")
    assert name == ("cpu" if _extension.extension_loaded() else "torch")
    monkeypatch.setenv("YOLOX_FAST_BACKEND", "torch")
    assert backends.choose("postprocess", "cpu")[0] == "torch"
    pred = make_prediction(batch=1, size=64, num_classes=4, hot=5)
    assert_same_detections(postprocess(pred, 4, 0.05), reference.postprocess(pred, 4, 0.05))


# --------------------------------------------------------------------------------------------------
# Operator registration
# --------------------------------------------------------------------------------------------------


@needs_ext
def test_opcheck():
    pred = make_prediction(batch=2, size=64, num_classes=5, hot=10, seed=14)
    op = torch.ops.yolox_fast.postprocess.default
    torch.library.opcheck(op, (pred, 5, 0.05, 0.45, False, False, 0, 10, None, None))
    raw, grids, strides = make_prediction(batch=2, size=64, num_classes=5, hot=10, seed=14, raw=True)
    torch.library.opcheck(op, (raw, 5, 0.05, 0.45, True, True, 20, 10, grids, strides))


@needs_ext
def test_torch_compile_fullgraph():
    torch._dynamo.reset()

    def f(pred):
        dets, counts = run_postprocess_padded(pred, 80, 0.01, 0.45, max_det=50, backend="cpu")
        return dets * 1.0, counts

    pred = make_prediction(batch=2, size=128, seed=15)
    compiled = torch.compile(f, fullgraph=True)
    got, expected = compiled(pred), f(pred)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


# --------------------------------------------------------------------------------------------------
# The real model
# --------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not (DATA / "weights" / "yolox_nano.pth").is_file() or not (DATA / "images" / "dog.jpg").is_file(),
                    reason=f"YOLOX-Nano weights or dog.jpg not found under {DATA}")
def test_yolox_nano_dog():
    from yolox_fast.data import preprocess, read_image
    from yolox_fast.models import build_yolox, load_official_weights

    model = build_yolox("yolox-nano")
    load_official_weights(model, DATA / "weights" / "yolox_nano.pth")
    model.eval()
    img, _ = preprocess(read_image(DATA / "images" / "dog.jpg"), 416)
    x = img[None]
    with torch.no_grad():
        features = model.backbone(x)
        pred = model.head(features)  # what model(x) returns in eval mode
        raw, sizes = model.head.forward_raw(features)
    grids, strides = model.head.grids(sizes, raw.device)

    ref = reference.postprocess(pred, 80, 0.3, 0.3, class_agnostic=True)
    (det,) = run_postprocess(pred, 80, 0.3, 0.3, class_agnostic=True)
    assert torch.equal(det, ref[0])
    names = {16: "dog", 1: "bicycle", 2: "car"}
    scores = det[:, 4] * det[:, 5]
    found = [(names.get(int(c), int(c)), round(float(s), 3)) for c, s in zip(det[:, 6], scores, strict=True)]
    assert found[:3] == [("dog", 0.855), ("bicycle", 0.803), ("car", 0.798)], found

    # raw head output with the decode fused in, on every CPU backend
    for backend in ["cpu", "torch"] if _extension.extension_loaded() else ["torch"]:
        (det_raw,) = run_postprocess(raw, 80, 0.3, 0.3, class_agnostic=True, grids=grids, strides=strides,
                                     backend=backend)
        assert det_raw.shape == det.shape
        torch.testing.assert_close(det_raw, det, rtol=1e-5, atol=1e-4)  # model's own decode vs the fused one


# --------------------------------------------------------------------------------------------------
# CUDA only: no host sync in the fixed-size path, the op's registration on the GPU (gpu-marked)
# --------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_cuda_padded_has_no_host_sync():
    pred = make_prediction(batch=16, size=640, seed=24).cuda()
    raw, grids, strides = (t.cuda() for t in make_prediction(batch=4, size=640, seed=24, raw=True))
    for _ in range(2):  # warm up (allocator, cub), then check
        postprocess_padded(pred, 80, 0.25, 0.45, max_det=100, backend="cuda")
        postprocess_padded(raw, 80, 0.25, 0.45, max_det=100, grids=grids, strides=strides, backend="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        postprocess_padded(pred, 80, 0.25, 0.45, max_det=100, backend="cuda")
        postprocess_padded(raw, 80, 0.25, 0.45, max_det=100, grids=grids, strides=strides, backend="cuda")
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.gpu
@needs_cuda
def test_cuda_opcheck_and_compile():
    pred = make_prediction(batch=2, size=64, num_classes=5, hot=10, seed=14).cuda()
    torch.library.opcheck(torch.ops.yolox_fast.postprocess.default, (pred, 5, 0.05, 0.45, False, False, 0, 10, None,
                                                                     None))
    torch._dynamo.reset()

    def f(p):
        dets, counts = postprocess_padded(p, 5, 0.05, 0.45, max_det=10, backend="cuda")
        return dets * 1.0, counts

    got, expected = torch.compile(f, fullgraph=True)(pred), f(pred)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
