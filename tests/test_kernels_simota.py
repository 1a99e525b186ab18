"""The Triton SimOTA kernels (kernels/simota.py) against the reference.

Marked ``triton``: natively on a GPU, on the CPU in the interpreter in its own process (``TRITON_INTERPRET=1
python -m pytest tests -m triton``, tests/op_testing.py). Interpreted shapes stay small; the GPU also runs the
big ones (marked ``slow``: the optional last step of scripts/gpu_check.sh).
"""

from __future__ import annotations

import pytest
import torch
from op_testing import INTERPRET, on_device, triton_device, triton_only
from simota_inputs import SimOTABatch, random_simota_batch, tied_simota_batch

from tests.test_ops_simota import assert_same, reference_assign
from yolox_fast.ops import backends, simota
from yolox_fast.ops.simota_variant import CENTER, SEED, VARIANTS

DEVICE = triton_device()
pytestmark = triton_only
gpu_only = pytest.mark.skipif(INTERPRET, reason="big shapes only on a GPU (the interpreter is slow)")


def check(batch, variant, where: str = ""):
    ref = reference_assign(batch, variant)
    assert_same(simota.simota_assign(*on_device(batch, "triton"), variant, backend="triton"), ref, f"triton {where}")
    return ref


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape", [(2, 5, 4, 84), (3, 7, 5, 300), (1, 30, 3, 336)],
                         ids=lambda s: "B{}-G{}-C{}-A{}".format(*s))
def test_random(shape, variant):
    check(random_simota_batch(*shape, seed=sum(shape)), VARIANTS[variant], str(shape))


def test_random_more_classes():
    check(random_simota_batch(2, 12, 20, 1344, seed=3), SEED)


@gpu_only
@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape", [(4, 30, 80, 8400), (16, 50, 80, 8400), (2, 120, 80, 8400), (1, 20, 80, 33600),
                                   (2, 500, 8, 2100)], ids=lambda s: "B{}-G{}-C{}-A{}".format(*s))
def test_random_gpu(shape, variant):
    check(random_simota_batch(*shape, seed=sum(shape)), VARIANTS[variant], str(shape))


def test_no_gt_and_padding_images():
    check(random_simota_batch(2, 0, 3, 84, seed=1), SEED, "no GT")
    batch = random_simota_batch(3, 4, 3, 84, seed=2)
    mask = batch.gt_mask.clone()
    mask[1] = False
    ref = check(batch._replace(gt_mask=mask), CENTER, "padding image")
    assert not ref[0][1].any()


def test_tiny_and_outside_gts():
    batch = random_simota_batch(1, 4, 3, 336, seed=4, fill=1.0)
    boxes = torch.tensor([[[102.0, 62.0, 1.0, 1.0], [-400.0, -400.0, 3.0, 3.0], [-10.0, 50.0, 40.0, 30.0],
                           [60.0, 60.0, 50.0, 40.0]]])
    batch = batch._replace(gt_boxes=boxes, gt_mask=torch.ones(1, 4, dtype=torch.bool))
    for variant in VARIANTS.values():
        check(batch, variant, variant.candidates)


def test_ties_duplicate_gts_and_equal_costs():
    batch = tied_simota_batch(336, torch.tensor([[True, True, True, True], [True, False, True, True]]), seed=5)
    for variant in VARIANTS.values():
        ref = check(batch, variant, variant.candidates)
        assert not (ref[1][0] == 1).any()  # GT 1 duplicates GT 0: it loses every contested anchor


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_predictions(dtype):
    check(random_simota_batch(2, 6, 4, 300, seed=6, dtype=dtype), SEED, str(dtype))


def test_non_contiguous_logits():
    base = random_simota_batch(2, 5, 4, 300, seed=7)
    raw = torch.cat([base.pred_boxes, base.obj_logits, base.cls_logits], dim=-1)  # the head's [B, A, 5 + C]
    batch = SimOTABatch(raw[..., :4], raw[..., 5:], raw[..., 4:5], *base[3:])
    assert not batch.cls_logits.is_contiguous()
    check(batch, CENTER)


def test_opcheck():
    from yolox_fast.kernels.simota import simota_assign_triton  # noqa: F401  (registers the op)

    batch = random_simota_batch(1, 2, 2, 84, seed=8).to(DEVICE)
    # The interpreter reads the storages of the fake tensors that trace the op, so the fake-tensor
    # check runs on a GPU only.
    utils = ("test_schema",) if INTERPRET else ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.yolox_fast.simota_assign_triton.default, (*batch, *SEED.op_args()),
                          test_utils=utils)


def test_backend_choice():
    assert "triton" in backends.available_backends(simota.OP, DEVICE)
    if INTERPRET:  # never picked automatically on the CPU, only when forced
        assert backends.choose(simota.OP, "cpu")[0] != "triton"


@gpu_only
@pytest.mark.slow
def test_no_host_sync_and_compile():
    """No host sync, and torch.compile gives the eager result bit for bit: Inductor launches the kernels with
    Triton's default options (FP fusion on), which are the eager launch's options too, and the kernels keep
    their products out of any FMA by themselves (kernels/_math.py; checked in tests/infrastructure)."""
    batch = random_simota_batch(16, 50, 80, 8400, seed=9).to("cuda")
    ref = simota.simota_assign(*batch, SEED, backend="triton")  # warm up: compiles the kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        simota.simota_assign(*batch, SEED, backend="triton")
    finally:
        torch.cuda.set_sync_debug_mode("default")

    def f(*args):
        return simota.simota_assign(*args, SEED, backend="triton")

    out = torch.compile(f, fullgraph=True)(*batch)
    assert all(torch.equal(a, b) for a, b in zip(out, ref, strict=True))
