from __future__ import annotations

import torch
from torch import nn

from mgm_studies.config import LRScheduleConfig
from mgm_studies.runs import trainer_for
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


def test_restart_forgets_what_was_averaged():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, [0.5, 0.999], warmup=False)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.restart(model)
    with torch.no_grad():
        model.weight.fill_(6.0)
    ema.update(model, 0)
    # From 4 (not 0), pulled towards 6 once: 4 + (1 - decay) * 2.
    assert torch.allclose(ema.shadows[0.5][0], torch.tensor([[5.0]]))
    assert torch.allclose(ema.shadows[0.999][0], torch.tensor([[4.002]]))


def test_mgms_ema_averages_the_game_only():
    # The trainer restarts the EMAs at the objective's ema_start (MGM: the end of its denoising warm-up): at the
    # first game step the average is the weights themselves, whatever the warm-up's weights were.
    from mgm_studies.config import parse_run_config

    config = {
        "data": {"name": "moons"},
        "model": {"hidden": 16, "depth": 1, "embedding_dim": 8},
        "objective": {"name": "mgm", "denoiser_steps": 12, "collapse_check_steps": 0},
        "train": {"steps": 20, "batch_size": 16, "ema_decays": [0.999]},
    }
    trainer = trainer_for(parse_run_config(config))
    assert trainer.objective.ema_start() == 12
    for _ in range(12):
        trainer.train_step()
    warm = [p.detach().clone() for p in trainer.model.parameters()]
    assert not all(torch.equal(s, p) for s, p in zip(trainer.ema.shadows[0.999], warm, strict=True))
    trainer.train_step()  # step 12: the game's first; the EMA restarts from the weights after it
    for shadow, parameter in zip(trainer.ema.shadows[0.999], trainer.model.parameters(), strict=True):
        assert torch.equal(shadow, parameter)
    trainer.train_step()
    assert not all(
        torch.equal(s, p) for s, p in zip(trainer.ema.shadows[0.999], trainer.model.parameters(), strict=True)
    )


def test_lr_schedules():
    cosine = LRScheduleConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(cosine, 0, 110) == 0.1 and lr_factor(cosine, 9, 110) == 1.0
    assert abs(lr_factor(cosine, 10, 110) - 1.0) < 1e-12
    assert abs(lr_factor(cosine, 60, 110) - 0.55) < 1e-12
    assert abs(lr_factor(cosine, 110, 110) - 0.1) < 1e-12
    linear = LRScheduleConfig(name="linear")
    assert abs(lr_factor(linear, 50, 100) - 0.5) < 1e-12
    assert lr_factor(LRScheduleConfig(), 77, 100) == 1.0
