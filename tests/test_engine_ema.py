"""ModelEMA: ema = d * ema + (1 - d) * model with d = 0.9998 * (1 - exp(-updates / 2000))."""

import math

import torch
from torch import nn

from yolox_fast.engine.ema import ModelEMA


def test_decay_ramp():
    ema = ModelEMA(nn.Linear(2, 2))
    assert ema.decay(1) == 0.9998 * (1 - math.exp(-1 / 2000))
    assert ema.decay(2000) == 0.9998 * (1 - math.exp(-1))
    assert abs(ema.decay(10**6) - 0.9998) < 1e-12


def test_update_formula_on_parameters_and_float_buffers():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = ModelEMA(model)
    start = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(2.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    d = ema.decay(1)
    current = model.state_dict()
    for k, v in ema.ema.state_dict().items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, d * start[k] + (1 - d) * current[k])  # float32 rounding
        else:  # integer buffers (BatchNorm's counter) are not averaged
            assert torch.equal(v, start[k])
    assert ema.updates == 1


def test_ema_is_frozen_and_in_eval_mode():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
    ema = ModelEMA(model)
    assert not ema.ema.training
    assert not any(p.requires_grad for p in ema.ema.parameters())
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_update_follows_tensors_replaced_in_the_model():
    """The entries are looked up at each update: a buffer or parameter replaced in its module is the one averaged."""
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = ModelEMA(model)
    ema.update(model)  # the lookup tables are built here
    model[1].running_mean = torch.full((3,), 5.0)  # a new tensor object, not an in-place change
    model[0].weight = nn.Parameter(torch.ones(3, 3))
    before = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    ema.update(model)
    d = ema.decay(2)
    torch.testing.assert_close(ema.ema[1].running_mean, d * before["1.running_mean"] + (1 - d) * 5.0)
    torch.testing.assert_close(ema.ema[0].weight, d * before["0.weight"] + (1 - d) * 1.0)


def test_update_refuses_a_different_model():
    ema = ModelEMA(nn.Sequential(nn.Linear(3, 3)))
    try:
        ema.update(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    except ValueError as e:
        assert "do not match" in str(e)
    else:
        raise AssertionError("a model with other parameters was averaged into the EMA")
