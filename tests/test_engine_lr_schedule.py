"""The official "yoloxwarmcos" schedule: quadratic warm-up from 0, cosine to 5% of the base lr, flat tail."""

import math

import pytest

from yolox_fast.engine.lr_schedule import WarmCosineSchedule

BASE = 0.01 / 64 * 64  # lr per image x batch 64


def schedule(**kw):
    args = dict(base_lr=BASE, iters_per_epoch=100, epochs=300, warmup_epochs=5, no_aug_epochs=15)
    args.update(kw)
    return WarmCosineSchedule(**args)


def test_warmup_is_quadratic_from_zero():
    s = schedule()
    assert s(0) == 0.0
    assert s(250) == pytest.approx(BASE * 0.25)  # half-way through 500 warm-up iterations: (1/2)^2
    assert s(100) == pytest.approx(BASE * (100 / 500) ** 2)
    assert s(500) == pytest.approx(BASE)


def test_warmup_from_a_nonzero_start():
    s = schedule(warmup_lr=0.001)
    assert s(0) == pytest.approx(0.001)
    assert s(250) == pytest.approx(0.001 + (BASE - 0.001) * 0.25)


def test_cosine_ends_at_five_percent_and_tail_is_constant():
    s = schedule()
    cosine_end = 300 * 100 - 15 * 100
    mid = (500 + cosine_end) // 2
    assert s(mid) == pytest.approx(0.05 * BASE + 0.5 * 0.95 * BASE * (1 + math.cos(math.pi * (mid - 500) / 28000)))
    assert s(cosine_end - 1) == pytest.approx(0.05 * BASE, rel=1e-6)
    for i in (cosine_end, cosine_end + 1, 300 * 100 - 1, 300 * 100 + 5):
        assert s(i) == 0.05 * BASE


def test_monotone_after_warmup():
    s = schedule(epochs=20, warmup_epochs=2, no_aug_epochs=3, iters_per_epoch=7)
    lrs = [s(i) for i in range(s.warmup_iters, s.total_iters)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_no_warmup_and_degenerate_spans():
    assert schedule(warmup_epochs=0)(0) == pytest.approx(BASE)
    s = schedule(epochs=5, warmup_epochs=5, no_aug_epochs=0)  # no cosine span left
    assert s(500) == pytest.approx(BASE) and s(501) == 0.05 * BASE
