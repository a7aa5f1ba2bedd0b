from __future__ import annotations

import torch
from torch import nn

from mgm_studies.config import LRScheduleConfig
from mgm_studies.training.ema import EMA
from mgm_studies.training.schedule import lr_factor


def test_every_decay_follows_its_closed_form():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, [0.5, 0.9], warmup=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for step in range(3):
        ema.update(model, step)
    # Starting at 0 and pulled towards 1: after k updates the average is 1 - decay^k.
    assert torch.allclose(ema.shadows[0.5][0], torch.tensor([[1 - 0.5**3]]))
    assert torch.allclose(ema.shadows[0.9][0], torch.tensor([[1 - 0.9**3]]))
    averaged = ema.averaged_model(model, 0.9)
    assert torch.allclose(averaged.weight, torch.tensor([[1 - 0.9**3]])) and not averaged.training
    assert torch.equal(ema.averaged_model(model, None).weight, model.weight)


def test_warmup_caps_the_decay_early():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, [0.999], warmup=True)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, 0)  # effective decay min(0.999, 1/10) = 0.1
    assert torch.allclose(ema.shadows[0.999][0], torch.tensor([[0.9]]))


def test_lr_schedules():
    cosine = LRScheduleConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(cosine, 0, 110) == 0.1 and lr_factor(cosine, 9, 110) == 1.0
    assert abs(lr_factor(cosine, 10, 110) - 1.0) < 1e-12
    assert abs(lr_factor(cosine, 60, 110) - 0.55) < 1e-12
    assert abs(lr_factor(cosine, 110, 110) - 0.1) < 1e-12
    linear = LRScheduleConfig(name="linear")
    assert abs(lr_factor(linear, 50, 100) - 0.5) < 1e-12
    assert lr_factor(LRScheduleConfig(), 77, 100) == 1.0
