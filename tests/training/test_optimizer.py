"""What the trainer's optimisers train and how: RAdam (`train.optimizer.name: radam`), the global-norm gradient clip,
and the flow maps' learned loss weight trained, clipped and checkpointed with the model (arXiv 2505.18825, Table 2)."""

from __future__ import annotations

import pytest
import torch
from conftest import small_config

from mgm_studies.config import OptimizerConfig, TrainConfig, parse_run_config
from mgm_studies.runs import trainer_for
from mgm_studies.training.optim import make_optimizer

LSD_WEIGHTED = {"name": "lsd", "learned_weight": True}


def _quadratic_trajectory(optimizer_factory, steps: int = 12) -> list[torch.Tensor]:
    """Iterates of an optimiser on f(x) = |A x - b|^2 from a fixed start: a small deterministic problem."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=generator), torch.randn(5, generator=generator)
    x = torch.nn.Parameter(torch.randn(3, generator=generator))
    optimizer = optimizer_factory([x])
    iterates = []
    for _ in range(steps):
        optimizer.zero_grad()
        (a @ x - b).square().sum().backward()
        optimizer.step()
        iterates.append(x.detach().clone())
    return iterates


def test_radam_from_the_config_follows_torch_radam_step_for_step():
    train = TrainConfig(
        steps=1, optimizer=OptimizerConfig(name="radam", lr=0.05, betas=(0.8, 0.99), weight_decay=0.01, eps=1e-6)
    )
    ours = _quadratic_trajectory(lambda params: make_optimizer(params, train, {}))
    reference = _quadratic_trajectory(
        lambda params: torch.optim.RAdam(params, lr=0.05, betas=(0.8, 0.99), weight_decay=0.01, eps=1e-6)
    )
    assert all(torch.equal(x, y) for x, y in zip(ours, reference, strict=True))
    adam = _quadratic_trajectory(lambda params: torch.optim.Adam(params, lr=0.05, betas=(0.8, 0.99), eps=1e-6))
    assert not torch.allclose(ours[-1], adam[-1])  # really another optimiser


def test_radams_first_step_is_plain_momentum_sgd():
    """RAdam's variance rectification is off while rho_t <= 5: the first update is lr times the bias-corrected first
    moment, i.e. x1 = x0 - lr * grad (Adam's would be about lr * sign(grad))."""
    train = TrainConfig(steps=1, optimizer=OptimizerConfig(name="radam", lr=0.1))
    x = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    optimizer = make_optimizer([x], train, {})
    x.square().sum().backward()  # grad 2 x
    optimizer.step()
    assert torch.allclose(x.detach(), torch.tensor([1.0, -2.0, 3.0]) * (1 - 0.1 * 2))


def test_radam_reaches_every_optimiser_of_a_run_with_the_objectives_overrides():
    config = parse_run_config(
        small_config(
            objective={"name": "mgm", "critic_adam_betas": [0.5, 0.9]},
            train={"steps": 4, "batch_size": 32, "optimizer": {"name": "radam", "lr": 1e-3}},
        )
    )
    trainer = trainer_for(config)
    assert {phase: type(opt) for phase, opt in trainer.optimizers.items()} == {
        phase: torch.optim.RAdam for phase in trainer.networks
    }
    assert trainer.optimizers["critic"].param_groups[0]["betas"] == (0.5, 0.9)


def _global_grad_norm(parameters) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None])).item()


def test_grad_clip_rescales_the_global_norm_over_everything_the_optimiser_trains():
    """train.grad_clip c: the gradients of all parameters together (the model's and the learned loss weight's) are
    scaled by min(1, c / |g|), |g| their joint L2 norm, which is logged as grad_norm (the paper clips at 10 and 1)."""
    clip = 1e-3
    config = small_config(objective=LSD_WEIGHTED, train={"steps": 4, "batch_size": 64, "grad_clip": clip})
    trainer = trainer_for(parse_run_config(config))
    pending = trainer.train_step()  # the gradients stay on the parameters until the next step
    logged = float(pending.values[pending.names.index("grad_norm")])
    assert logged > 10 * clip
    assert _global_grad_norm(trainer.trained_parameters["model"]) == pytest.approx(clip, rel=1e-4)
    model_only = _global_grad_norm(trainer.model.parameters())
    weight_only = _global_grad_norm(trainer.objective.loss_weight.parameters())
    assert weight_only > 0 and model_only**2 + weight_only**2 == pytest.approx(clip**2, rel=1e-4)  # one joint norm


def test_the_learned_loss_weight_trains_with_the_model_and_resumes_exactly(tmp_path):
    config = parse_run_config(
        small_config(
            objective=LSD_WEIGHTED,
            train={"steps": 6, "batch_size": 64, "checkpoint_interval": 3, "optimizer": {"name": "radam"}},
        )
    )
    reference = trainer_for(config)
    weight = reference.objective.loss_weight
    optimised = {id(p) for p in reference.optimizers["model"].param_groups[0]["params"]}
    assert {id(p) for p in weight.parameters()} <= optimised
    start = [p.detach().clone() for p in weight.parameters()]
    for _ in range(6):
        reference.train_step()
    assert any(not torch.equal(a, p) for a, p in zip(start, weight.parameters(), strict=True))

    first = trainer_for(config, checkpoint_dir=tmp_path)
    for _ in range(3):
        first.train_step()
    first.save()
    assert set(first.state_dict()["trained_with"]["model"]) == {"loss_weight"}
    resumed = trainer_for(config, checkpoint_dir=tmp_path)
    assert resumed.step == 3
    for _ in range(3):
        resumed.train_step()
    for ours, theirs in ((resumed.model, reference.model), (resumed.objective.loss_weight, weight)):
        assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters(), strict=True))
