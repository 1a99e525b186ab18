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
