"""SimOTA backends against the reference (yolox_fast/ops/reference.py).

Every backend must give the reference's ``fg_mask`` and ``matched_gt`` exactly and ``matched_iou``
within 1e-6, on realistic random batches (no ties) and on purpose-built tie cases (the documented
rule: lowest anchor index first among equal costs, lowest GT index wins a contested anchor).
Backends and devices: tests/op_testing.py; the Triton kernels' own tests: tests/test_kernels_simota.py.
"""

from __future__ import annotations

import os

import pytest
import torch
from op_testing import needs_ext, needs_gpu, on_device
from simota_inputs import SimOTABatch, random_simota_batch, tied_simota_batch

from yolox_fast import SimOTAAssigner
from yolox_fast.ops import backends, reference, simota
from yolox_fast.ops.simota_torch import simota_assign_torch
from yolox_fast.ops.simota_variant import CENTER, SEED, VARIANTS

CPU_BACKENDS = [b for b in backends.available_backends(simota.OP, "cpu") if b not in ("reference", "triton")]
HAS_EXT = "cpu" in CPU_BACKENDS
#: above this many (image, GT, anchor, class) products the C++ op (itself held to the reference on the CPU
#: shapes of this file) stands in for the Python reference: the GPU run's references stay quick
REFERENCE_BY_CPU_OP = 2e8
_references: dict = {}


def reference_assign(batch, variant):
    """The reference's ``(fg, matched_gt, matched_iou)`` of a CPU ``batch``, computed once per batch and variant
    (cached by identity and shape); by the C++ op for big batches when it is built."""
    b, a, c = batch.cls_logits.shape
    key = (tuple(t.data_ptr() for t in batch), tuple(batch.cls_logits.shape), batch.gt_boxes.shape, variant)
    if key not in _references:
        big = b * max(batch.gt_boxes.shape[1], 1) * a * c > REFERENCE_BY_CPU_OP
        if big and HAS_EXT:
            _references[key] = simota.simota_assign(*batch, variant, backend="cpu")
        else:
            _references[key] = reference.simota_assign(*batch, variant)
        _references[key] = (*_references[key], batch)  # keeps the storages alive: the key stays unique
    return _references[key][:3]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run this module on one intra-op thread: on the shared 2-core machines the many small ops of
    the reference and torch paths spend most of their time in thread barriers otherwise (measured
    20-50x slower under load). test_cpu_op_threads covers the parallel paths of the C++ op."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_same(out, ref, where: str = "") -> None:
    """fg_mask and matched_gt exactly, matched_iou within 1e-6, with a readable first difference."""
    fg, gt, iou = (t.cpu() for t in out)
    rfg, rgt, riou = (t.cpu() for t in ref)
    assert fg.dtype == torch.bool and gt.dtype == torch.long and iou.dtype == torch.float32, where
    assert fg.shape == rfg.shape and gt.shape == rgt.shape and iou.shape == riou.shape, where
    bad = (fg != rfg) | (gt != rgt)
    if bad.any():
        b, a = bad.nonzero()[0].tolist()
        raise AssertionError(
            f"{where}: {int(bad.sum())} anchors differ; first: image {b} anchor {a}: got fg={bool(fg[b, a])} "
            f"gt={int(gt[b, a])}, reference fg={bool(rfg[b, a])} gt={int(rgt[b, a])}"
        )
    err = (iou - riou).abs().max().item() if iou.numel() else 0.0
    assert err <= 1e-6, f"{where}: matched_iou differs by {err}"


#: the backends every case of this table runs on: the CPU ones, and on a GPU machine the CUDA op and Triton
#: natively too. (The Triton interpreter is too slow for these shapes: its CPU cases, small, are in
#: tests/test_kernels_simota.py.)
CASE_BACKENDS = CPU_BACKENDS + [b for b in ("cuda", "triton")
                                if torch.cuda.is_available() and b in backends.available_backends(simota.OP, "cuda")]


def run(backend: str, batch, variant):
    """``simota_assign`` of ``backend`` with the batch on the backend's device (outputs stay there)."""
    return simota.simota_assign(*on_device(batch, backend), variant, backend=backend)


def check_all(batch, variant, backends_=None, where: str = ""):
    """Every backend of ``backends_`` (default :data:`CASE_BACKENDS`) gives the reference's assignment."""
    ref = reference.simota_assign(*batch, variant)
    for name in backends_ or CASE_BACKENDS:
        assert_same(run(name, batch, variant), ref, f"{name} {where}")
    return ref


# --------------------------------------------------------------------------------------------------
# Random realistic batches: many small shapes, a few big ones (the reference is slow).
# --------------------------------------------------------------------------------------------------

SMALL = [  # (B, G, C, A)
    (1, 1, 1, 64),
    (2, 3, 2, 84),
    (3, 7, 5, 300),
    (4, 12, 80, 336),
    (1, 20, 3, 1344),
    (5, 9, 11, 1344),
    (2, 40, 20, 2100),
    (16, 6, 4, 336),
    (6, 25, 80, 1344),
    (3, 60, 7, 2100),
    (2, 5, 300, 336),  # many classes: several BCE-sum groups per anchor
]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape", SMALL, ids=lambda s: "B{}-G{}-C{}-A{}".format(*s))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_small(shape, seed, variant):
    b, g, c, a = shape
    batch = random_simota_batch(b, g, c, a, seed=seed * 101 + a, fill=0.9)
    ref = check_all(batch, VARIANTS[variant], where=f"{shape} seed {seed}")
    if g >= 5:
        assert ref[0].any(), "the batch should assign something"


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize(
    "shape",
    [(2, 50, 80, 8400), (1, 20, 80, 33600), (2, 500, 8, 1344), (16, 12, 80, 2100), (1, 120, 80, 8400),
     (1, 500, 2, 33600)],
    ids=lambda s: "B{}-G{}-C{}-A{}".format(*s),
)
def test_random_large(shape, variant):
    b, g, c, a = shape
    batch = random_simota_batch(b, g, c, a, seed=7 + g, fill=1.0)
    ref = check_all(batch, VARIANTS[variant], where=str(shape))
    assert int(ref[0].sum()) > g // 2


def _sweep_shapes(n: int = 30, budget: float = 4e7):
    """Random (B, G, C, A) over B 1-16, G 0-500, C 1-80, A 64-33600, within a reference-cost budget."""
    gen = torch.Generator().manual_seed(1234)
    anchors = [64, 84, 300, 336, 1344, 2100, 5376, 8400, 33600]
    out = []
    while len(out) < n:
        b = int(torch.randint(1, 17, (1,), generator=gen))
        g = int(torch.randint(0, 501, (1,), generator=gen)) if len(out) % 3 == 0 else int(
            torch.randint(0, 40, (1,), generator=gen))
        c = int(torch.randint(1, 81, (1,), generator=gen))
        a = anchors[int(torch.randint(0, len(anchors), (1,), generator=gen))]
        if b * max(g, 1) * c * a * 0.5 <= budget:
            out.append((b, g, c, a))
    return out


@pytest.mark.parametrize("shape", _sweep_shapes(), ids=lambda s: "B{}-G{}-C{}-A{}".format(*s))
def test_random_sweep(shape):
    b, g, c, a = shape
    seed = b * 7919 + g * 104729 + c * 31 + a
    variant = (SEED, CENTER)[seed % 2]
    batch = random_simota_batch(b, g, c, a, seed=seed, fill=0.8)
    check_all(batch, variant, where=f"{shape} {variant.candidates}")


def test_inputs_are_non_trivial():
    """The generator gives conflicts, k > 1, fallback GTs (fewer geometry anchors than k) and background."""
    batch = random_simota_batch(2, 60, 80, 8400, seed=3)
    fg, gt, iou = reference.simota_assign(*batch, SEED)
    per_gt = torch.bincount(gt[0][fg[0]], minlength=60)
    assert per_gt.max() >= 3 and (per_gt == 1).any()
    assert 0.3 < iou[fg].mean() < 0.95


@needs_ext
@pytest.mark.parametrize("shape", [(3, 40, 80, 8400), (1, 500, 4, 8400)], ids=["image-parallel", "phase-parallel"])
def test_cpu_op_threads(shape):
    """The C++ op on 1, 2 and 3 threads: image by image (B >= threads), and phase by phase with
    each phase parallel over blocks / GTs (fewer images than threads, much work)."""
    batch = random_simota_batch(*shape, seed=30, fill=1.0)
    ref = reference.simota_assign(*batch, SEED)
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            assert_same(run("cpu", batch, SEED), ref, f"{n} threads")
    finally:
        torch.set_num_threads(1)


def test_batch_generator_is_a_test_helper():
    """The random-batch generator is test code: it lives in tests/, not in the installed package."""
    import importlib.util

    import simota_inputs

    assert os.path.dirname(os.path.abspath(simota_inputs.__file__)) == os.path.dirname(os.path.abspath(__file__))
    assert importlib.util.find_spec("yolox_fast.ops.simota_inputs") is None


@needs_ext
def test_cpu_op_scalar_loops():
    """The baseline-ISA loops (used on CPUs without AVX2) in a fresh process: ATEN_CPU_CAPABILITY=default."""
    import subprocess
    import sys

    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from yolox_fast.ops import simota, reference\n"
        "from yolox_fast.ops.simota_variant import VARIANTS\n"
        "from simota_inputs import random_simota_batch\n"
        "for v in VARIANTS.values():\n"
        "    for shape in [(2, 30, 80, 8400), (3, 9, 5, 1344), (2, 40, 3, 2100)]:\n"
        "        x = random_simota_batch(*shape, seed=shape[1])\n"
        "        r = reference.simota_assign(*x, v); o = simota.simota_assign(*x, v, backend='cpu')\n"
        "        assert torch.equal(r[0], o[0]) and torch.equal(r[1], o[1]), shape\n"
        "        assert (r[2] - o[2]).abs().max() <= 1e-6\n"
        "print('ok')\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join([root, os.path.join(root, "tests")])  # tests/: the simota_inputs helper
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", PYTHONPATH=path)
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


# --------------------------------------------------------------------------------------------------
# Dtypes and layouts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prediction_dtypes(dtype, variant):
    batch = random_simota_batch(3, 15, 12, 1344, seed=5, dtype=dtype)
    check_all(batch, VARIANTS[variant], where=str(dtype))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_non_contiguous_inputs(variant):
    base = random_simota_batch(3, 10, 6, 1344, seed=11)
    b, a, c = base.cls_logits.shape
    raw = torch.cat([base.pred_boxes, base.obj_logits, base.cls_logits], dim=-1)  # [B, A, 5 + C], as the head
    padded = torch.zeros(b, 20, 5)  # labels with interleaved junk rows
    padded[:, ::2] = torch.cat([base.gt_classes[..., None].float(), base.gt_boxes], dim=-1)

    def every_other(t):  # same values, stride 2 in the last dim
        return torch.stack([t, torch.zeros_like(t)], dim=-1).flatten(-2)[..., ::2]

    batch = SimOTABatch(
        raw[..., :4],
        raw[..., 5:],
        raw[..., 4:5],
        base.grids.t().contiguous().t(),  # column-major [A, 2]
        every_other(base.strides),
        padded[:, ::2, 1:],
        base.gt_classes.t().contiguous().t(),
        every_other(base.gt_mask),
    )
    assert not batch.cls_logits.is_contiguous() and not batch.gt_boxes.is_contiguous()
    check_all(batch, VARIANTS[variant])
    # a non-contiguous class dim too
    batch2 = batch._replace(cls_logits=base.cls_logits.transpose(1, 2).contiguous().transpose(1, 2))
    assert batch2.cls_logits.stride(2) != 1
    check_all(batch2, VARIANTS[variant])


def test_integer_grids_and_int32_classes():
    base = random_simota_batch(2, 8, 5, 336, seed=2)
    batch = base._replace(grids=base.grids.long(), strides=base.strides.int(), gt_classes=base.gt_classes.int())
    check_all(batch, SEED)


# --------------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_no_gt(variant):
    batch = random_simota_batch(2, 0, 5, 336, seed=1)
    assert batch.gt_boxes.shape == (2, 0, 4)
    ref = check_all(batch, VARIANTS[variant])
    assert not ref[0].any() and (ref[1] == -1).all()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_all_padding_images(variant):
    batch = random_simota_batch(4, 9, 5, 1344, seed=4)
    mask = batch.gt_mask.clone()
    mask[1] = False
    mask[3] = False
    batch = batch._replace(gt_mask=mask)
    ref = check_all(batch, VARIANTS[variant])
    assert not ref[0][1].any() and not ref[0][3].any() and ref[0][0].any()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gts_outside_the_image_and_without_candidates(variant):
    batch = random_simota_batch(2, 8, 4, 1344, seed=6)
    boxes = batch.gt_boxes.clone()
    boxes[0, 0] = torch.tensor([-400.0, -400.0, 3.0, 3.0])  # far away: no candidate at all
    boxes[0, 1] = torch.tensor([-30.0, 100.0, 80.0, 40.0])  # partly outside
    boxes[1, 2] = torch.tensor([1000.0, 5.0, 4.0, 4.0])  # outside, right
    mask = batch.gt_mask.clone()
    mask[0, :3] = True
    mask[1, 2] = True
    batch = batch._replace(gt_boxes=boxes, gt_mask=mask)
    ref = check_all(batch, VARIANTS[variant])
    # As in the official code, a GT with no candidate of its own still takes its k cheapest
    # (penalised) candidates of the image.
    assert (ref[1][0] == 0).any()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_tiny_gts(variant):
    """GTs between anchor centres: no geometry anchor, every candidate penalised (fallback path)."""
    batch = random_simota_batch(2, 12, 6, 1344, seed=8)
    boxes = batch.gt_boxes.clone()
    g = torch.arange(12, dtype=torch.float32)
    boxes[:, :, 0] = 16.0 * (g % 4) + 8.0 + 0.3  # right next to an anchor centre ...
    boxes[:, :, 1] = 16.0 * (g // 4) + 8.0 + 0.4
    boxes[:, :, 2] = 0.5  # ... but too small to contain it
    boxes[:, :, 3] = 0.5
    batch = batch._replace(gt_boxes=boxes, gt_mask=torch.ones_like(batch.gt_mask))
    ref = check_all(batch, VARIANTS[variant])
    assert ref[0].any()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_anchor_penalised(variant):
    """A GT whose geometry set is empty takes its k cheapest penalised anchors."""
    batch = random_simota_batch(1, 1, 3, 336, seed=9)
    batch = batch._replace(
        gt_boxes=torch.tensor([[[102.0, 62.0, 1.0, 1.0]]]),  # between anchor centres of every stride
        gt_classes=torch.tensor([[1]]),
        gt_mask=torch.tensor([[True]]),
    )
    pred = batch.pred_boxes.clone()
    jitter = torch.randn(pred.shape[1], 2, generator=torch.Generator().manual_seed(0))
    pred[0, :, :2] = torch.tensor([100.0, 60.0]) + jitter
    pred[0, :, 2:] = 1.5
    batch = batch._replace(pred_boxes=pred)
    ref = check_all(batch, VARIANTS[variant])
    assert ref[0].sum() >= 1


def test_few_candidates_and_high_iou():
    """k from near-perfect IoUs, with fewer than 10 candidates in the image."""
    batch = random_simota_batch(1, 1, 2, 64, seed=10)
    gt = torch.tensor([[[4.0, 4.0, 6.0, 6.0]]])  # top-left corner: few centre-square anchors
    pred = gt.expand(1, batch.pred_boxes.shape[1], 4).clone()
    batch = batch._replace(gt_boxes=gt, gt_classes=torch.tensor([[0]]), gt_mask=torch.tensor([[True]]), pred_boxes=pred)
    for variant in VARIANTS.values():
        check_all(batch, variant)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_duplicate_gts(variant):
    """Identical GTs tie on every contested anchor: the lowest GT index wins."""
    batch = random_simota_batch(2, 6, 5, 1344, seed=12, fill=1.0)
    boxes, classes = batch.gt_boxes.clone(), batch.gt_classes.clone()
    boxes[:, 3], classes[:, 3] = boxes[:, 1], classes[:, 1]
    boxes[:, 5], classes[:, 5] = boxes[:, 1], classes[:, 1]
    batch = batch._replace(gt_boxes=boxes, gt_classes=classes, gt_mask=torch.ones_like(batch.gt_mask))
    ref = check_all(batch, VARIANTS[variant])
    assert (ref[1] == 1).any() and not (ref[1] == 3).any() and not (ref[1] == 5).any()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_equal_costs_lowest_anchor_first(variant):
    """All anchors predict the same box and scores: among equal costs the lowest anchor index wins,
    both among geometry anchors and among penalised ones."""
    a = 1344
    batch = random_simota_batch(2, 4, 3, a, seed=13)
    pred = torch.tensor([60.0, 50.0, 30.0, 40.0]).expand(2, a, 4).clone()
    batch = batch._replace(
        pred_boxes=pred,
        cls_logits=torch.full((2, a, 3), -1.0),
        obj_logits=torch.zeros(2, a, 1),
        gt_boxes=torch.tensor([[[60.0, 50.0, 32.0, 40.0], [61.0, 52.0, 30.0, 41.0], [10.1, 90.3, 0.5, 0.5],
                                [62.0, 49.0, 28.0, 44.0]]]).expand(2, 4, 4).clone(),
        gt_classes=torch.tensor([[0, 1, 2, 0]]).expand(2, 4).clone(),
        gt_mask=torch.tensor([[True, True, True, True], [True, False, True, True]]),
    )
    ref = check_all(batch, VARIANTS[variant])
    # each GT's picks are the lowest anchor indices of its cheapest tier
    assert ref[0].any()


# --------------------------------------------------------------------------------------------------
# Dispatcher integration: opcheck, fake kernels, torch.compile
# --------------------------------------------------------------------------------------------------


@needs_ext
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_opcheck(variant):
    batch = random_simota_batch(2, 5, 4, 336, seed=14)
    torch.library.opcheck(torch.ops.yolox_fast.simota_assign.default, (*batch, *VARIANTS[variant].op_args()))


@needs_ext
def test_op_rejects_bad_arguments():
    batch = random_simota_batch(1, 3, 4, 84, seed=15)
    op = torch.ops.yolox_fast.simota_assign
    with pytest.raises(ValueError, match="gt_boxes must be"):
        op(*batch._replace(gt_boxes=batch.gt_boxes[..., :3]), *SEED.op_args())
    with pytest.raises(ValueError, match="gt_mask must be bool"):
        op(*batch._replace(gt_mask=batch.gt_mask.int()), *SEED.op_args())
    with pytest.raises(ValueError, match=r"gt_classes\[0, 0\] = 4 is outside \[0, 4\)"):
        op(*batch._replace(gt_classes=torch.full_like(batch.gt_classes, 4), gt_mask=torch.ones_like(batch.gt_mask)),
           *SEED.op_args())


def test_torch_backend_compiles_fullgraph():
    batch = random_simota_batch(2, 6, 5, 336, seed=16)
    ref = reference.simota_assign(*batch, SEED)
    compiled = torch.compile(simota_assign_torch, fullgraph=True, backend="aot_eager")
    assert_same(compiled(*batch, SEED), ref, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize(
    "device",
    [
        pytest.param("cpu", marks=pytest.mark.skipif(os.environ.get("YOLOX_FAST_SLOW_TESTS") != "1",
                                                     reason="inductor compile takes ~40 s on 2 cores; "
                                                            "set YOLOX_FAST_SLOW_TESTS=1")),
        pytest.param("cuda", marks=[pytest.mark.gpu,
                                    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]),
    ],
)
def test_torch_backend_compiles_with_inductor(device):
    batch = random_simota_batch(2, 6, 5, 336, seed=17)
    ref = reference.simota_assign(*batch, CENTER)
    compiled = torch.compile(simota_assign_torch, fullgraph=True)
    assert_same(compiled(*batch.to(device), CENTER), ref, f"inductor {device}")


@needs_ext
def test_op_traces_fullgraph():
    batch = random_simota_batch(2, 6, 5, 336, seed=18)
    ref = reference.simota_assign(*batch, SEED)

    def f(*args):
        return simota.simota_assign(*args, SEED, backend="cpu")

    assert_same(torch.compile(f, fullgraph=True, backend="aot_eager")(*batch), ref, "compiled op")


# --------------------------------------------------------------------------------------------------
# Backend choice
# --------------------------------------------------------------------------------------------------


def test_default_cpu_backend_is_the_cpp_op(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    name, _ = backends.choose(simota.OP, "cpu")
    assert name == ("cpu" if HAS_EXT else "torch")


def test_env_var_and_argument_force_a_backend(monkeypatch):
    batch = random_simota_batch(1, 4, 3, 336, seed=19)
    calls = []
    orig = simota_assign_torch

    def spy(batch, variant):  # a backend gets the SimOTABatch and the variant
        calls.append(1)
        return orig(*batch, variant)

    monkeypatch.setitem(backends._REGISTRY[simota.OP], "torch", (spy, backends.always))
    monkeypatch.setenv(backends.ENV_VAR, "torch")
    SimOTAAssigner(3).assign(*batch)
    assert calls == [1]
    monkeypatch.setenv(backends.ENV_VAR, "reference")
    SimOTAAssigner(3, backend="torch").assign(*batch)  # the argument wins over the variable
    assert calls == [1, 1]


def test_forcing_an_unavailable_backend_is_a_clear_error(monkeypatch):
    batch = random_simota_batch(1, 2, 3, 84, seed=20)
    with pytest.raises(RuntimeError, match="backend 'cuda' of simota_assign is not available on cpu"):
        SimOTAAssigner(3, backend="cuda").assign(*batch)
    if os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(RuntimeError, match="backend 'triton'"):
            SimOTAAssigner(3, backend="triton").assign(*batch)
    monkeypatch.setenv(backends.ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match="unknown backend 'nonsense'"):
        SimOTAAssigner(3).assign(*batch)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_assigner_backends(backend):
    batch = random_simota_batch(3, 8, 6, 1344, seed=21)
    ref = reference.simota_assign(*batch, CENTER)
    res = SimOTAAssigner(6, "center", backend=backend).assign(*batch)
    assert_same((res.fg_mask, res.matched_gt, res.matched_iou), ref, backend)
    assert torch.equal(res.num_fg, ref[0].sum(1))


# --------------------------------------------------------------------------------------------------
# Drop-in use: get_assignments and the training loss
# --------------------------------------------------------------------------------------------------


def test_get_assignments_matches_a_literal_per_image_call():
    batch = random_simota_batch(2, 7, 5, 1344, seed=22, fill=1.0)
    assigner = SimOTAAssigner(5)
    b = 1
    real = batch.gt_mask[b].nonzero().squeeze(1)
    gt, classes = batch.gt_boxes[b, real], batch.gt_classes[b, real].float()
    out = assigner.get_assignments(
        b, len(real), batch.pred_boxes.shape[1], gt, classes, batch.pred_boxes[b], batch.strides[None],
        batch.grids[None, :, 0], batch.grids[None, :, 1], batch.cls_logits, batch.pred_boxes, batch.obj_logits,
        None, None,
    )
    fg, matched, iou = reference.simota_assign_image(batch.pred_boxes[b], batch.cls_logits[b], batch.obj_logits[b],
                                                     batch.grids, batch.strides, gt, classes, SEED)
    gt_cls, fg_mask, pred_ious, matched_inds, num_fg = out
    assert torch.equal(fg_mask, fg) and torch.equal(matched_inds, matched[fg]) and num_fg == int(fg.sum())
    assert torch.equal(gt_cls, classes[matched[fg]])
    assert (pred_ious - iou[fg]).abs().max() <= 1e-6


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_training_loss_equals_reference_assigner(backend):
    """yolox-nano at 128x128: the loss with the batched assigner equals the loss with the reference."""
    from yolox_fast.models import build_yolox

    torch.manual_seed(0)
    state = build_yolox("yolox-nano", num_classes=8).state_dict()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 128, 128, generator=gen) * 255
    labels = torch.zeros(2, 6, 5)  # class, cx, cy, w, h; all-zero rows are padding
    labels[0, :4, 0] = torch.tensor([1.0, 3.0, 5.0, 7.0])
    labels[0, :4, 1:3] = torch.rand(4, 2, generator=gen) * 100 + 14
    labels[0, :4, 3:] = torch.rand(4, 2, generator=gen) * 50 + 6
    labels[1, :2, 0] = torch.tensor([2.0, 0.0])
    labels[1, :2, 1:3] = torch.rand(2, 2, generator=gen) * 100 + 14
    labels[1, :2, 3:] = torch.rand(2, 2, generator=gen) * 40 + 4
    losses = {}
    for name in ("reference", backend):
        model = build_yolox("yolox-nano", num_classes=8, assigner=SimOTAAssigner(8, backend=name))
        model.load_state_dict(state)
        model.train()
        losses[name] = model(images, labels)
    ref, got = losses["reference"], losses[backend]
    assert ref["num_fg"] > 0
    for key in ref:
        assert torch.equal(got[key], ref[key]), (key, got[key], ref[key])


# --------------------------------------------------------------------------------------------------
# CUDA (gpu-marked; skipped without a GPU)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("backend", ["cuda", "torch"])
@pytest.mark.parametrize(
    "shape", [(2, 7, 5, 300), (4, 30, 80, 8400), (16, 50, 80, 8400),
              pytest.param((1, 500, 80, 33600), marks=pytest.mark.slow), (3, 0, 3, 84)],
    ids=lambda s: "B{}-G{}-C{}-A{}".format(*s),
)
@pytest.mark.gpu
@needs_gpu
def test_cuda_backends_match_reference(shape, backend, variant):
    b, g, c, a = shape
    batch = random_simota_batch(b, g, c, a, seed=23 + g)
    ref = reference_assign(batch, VARIANTS[variant])
    got = simota.simota_assign(*batch.to("cuda"), VARIANTS[variant], backend=backend)  # torch: on the GPU too
    assert_same(got, ref, f"{backend} {shape}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.gpu
@needs_gpu
def test_cuda_dtypes_and_edge_cases(dtype):
    batch = random_simota_batch(3, 15, 12, 1344, seed=24, dtype=dtype)
    mask = batch.gt_mask.clone()
    mask[1] = False
    batch = batch._replace(gt_mask=mask)
    for variant in VARIANTS.values():
        assert_same(run("cuda", batch, variant), reference_assign(batch, variant), str(dtype))


@pytest.mark.gpu
@needs_gpu
def test_cuda_no_host_sync_and_opcheck():
    batch = random_simota_batch(16, 50, 80, 8400, seed=25).to("cuda")
    simota.simota_assign(*batch, SEED, backend="cuda")  # warm up (allocator, module load)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for name in ("cuda", "torch"):
            simota.simota_assign(*batch, SEED, backend=name)
        res = SimOTAAssigner(80).assign(*batch)  # validate=True: shape checks only on a GPU
        res.num_fg.sum()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    small = random_simota_batch(2, 5, 4, 336, seed=26).to("cuda")
    torch.library.opcheck(torch.ops.yolox_fast.simota_assign.default, (*small, *SEED.op_args()))


@pytest.mark.gpu
@needs_gpu
def test_cuda_default_backend_and_ties():
    name, _ = backends.choose(simota.OP, "cuda")
    assert name == "cuda"
    batch = tied_simota_batch(1344, torch.ones(2, 4, dtype=torch.bool), seed=13)
    for variant in VARIANTS.values():
        ref = reference.simota_assign(*batch, variant)
        for backend in ("cuda", "torch"):
            assert_same(simota.simota_assign(*batch.to("cuda"), variant, backend=backend), ref, backend)
