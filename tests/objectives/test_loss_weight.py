"""The flow maps' learned per-(s, t) loss weight: exp(-w(s, t)) L + w(s, t) per sample, off by default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mgm_studies.interpolants import Interpolant
from mgm_studies.models.mlp import TwoTimeMLP
from mgm_studies.objectives import OBJECTIVES, build_objective
from mgm_studies.objectives.loss_weight import LossWeight, weighted_loss

SELF_DISTILLATION = ["lsd", "esd", "psd_midpoint", "psd_uniform"]


class ConstantWeight(nn.Module):
    """w(s, t) = c + s + 2 t: a fixed weight whose values the test knows."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c))

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.c + s + 2 * t


def _objective(name: str, **options):
    config_class = OBJECTIVES[name].config
    return build_objective(config_class(name=name, **options), Interpolant("linear", "none"))


def _model() -> TwoTimeMLP:
    torch.manual_seed(0)
    return TwoTimeMLP(2, hidden=16, depth=2, embedding_dim=8)


def _loss(objective, model, seed: int = 3):
    return objective(
        model, torch.randn(64, 2, generator=torch.Generator().manual_seed(1)), torch.Generator().manual_seed(seed)
    )


def test_weighted_loss_is_exp_minus_w_times_the_loss_plus_w_and_optimal_at_log_loss():
    loss, w = torch.tensor([1.0, 4.0, 0.5]), torch.tensor([0.0, 1.0, -2.0])
    assert torch.allclose(weighted_loss(loss, w), torch.tensor([1.0, 4.0 / torch.e + 1.0, 0.5 * torch.e**2 - 2.0]))
    w = torch.zeros(3, requires_grad=True)
    weighted_loss(loss, w).sum().backward()
    assert torch.allclose(w.grad, 1 - loss)  # d/dw = 1 - exp(-w) L: zero at w = log L
    best = torch.log(loss).requires_grad_()
    weighted_loss(loss, best).sum().backward()
    assert torch.allclose(best.grad, torch.zeros(3), atol=1e-6)


@pytest.mark.parametrize("name", [*SELF_DISTILLATION, "pfmm", "itvm"])
def test_off_by_default(name):
    assert OBJECTIVES[name].config.model_fields["learned_weight"].default is False


@pytest.mark.parametrize("name", SELF_DISTILLATION)
def test_off_the_loss_is_the_unweighted_one_and_on_it_starts_equal_since_w_starts_at_zero(name):
    model = _model()
    plain = _objective(name, diagonal_fraction=0.5)
    weighted = _objective(name, diagonal_fraction=0.5, learned_weight=True)
    plain.attach(model, (2,))
    weighted.attach(model, (2,))
    assert plain.loss_weight is None and plain.trained_with("model") == {}
    assert set(weighted.trained_with("model")) == {"loss_weight"} and weighted.trained_with("critic") == {}
    off, on = _loss(plain, model), _loss(weighted, model)
    assert "loss_weight/mean" not in off.diagnostics
    assert torch.allclose(on.loss, off.loss)  # exp(-0) L + 0
    assert on.diagnostics["loss/unweighted"] == pytest.approx(off.loss.mean().item())


@pytest.mark.parametrize("name", SELF_DISTILLATION)
def test_for_a_fixed_w_each_sample_pays_exp_minus_w_of_its_times_times_its_loss_plus_w(name):
    model = _model()
    plain, weighted = (
        _objective(name, diagonal_fraction=0.5),
        _objective(name, diagonal_fraction=0.5, learned_weight=True),
    )
    weighted.attach(model, (2,))
    weighted.loss_weight = ConstantWeight(0.3)
    times = []
    original = weighted.loss_weight.forward
    weighted.loss_weight.forward = lambda s, t: times.append((s, t)) or original(s, t)
    off, on = _loss(plain, model), _loss(weighted, model)
    ((s, t),) = times
    w = 0.3 + s + 2 * t
    assert torch.equal(s[:32], t[:32]) and (t[32:] > s[32:]).all()  # the diagonal first, then pairs s < t
    assert torch.allclose(on.loss, torch.exp(-w) * off.loss + w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", SELF_DISTILLATION)
def test_the_weights_parameters_receive_gradients_from_the_loss(name):
    model = _model()
    objective = _objective(name, diagonal_fraction=0.5, learned_weight=True)
    objective.attach(model, (2,))
    weight = objective.loss_weight
    assert isinstance(weight, LossWeight)
    _loss(objective, model).loss.mean().backward()
    readout = weight.net[-1]
    assert readout.weight.grad.abs().sum() > 0 and readout.bias.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())
    # The hidden layer's gradient flows through the read-out, zero at the start: nonzero once it has moved.
    with torch.no_grad():
        readout.weight.fill_(0.1)
    weight.zero_grad()
    _loss(objective, model).loss.mean().backward()
    assert all(p.grad.abs().sum() > 0 for p in weight.parameters())


@pytest.mark.parametrize("name", ["itvm", "pfmm"])
def test_objectives_whose_attach_does_not_build_it_refuse_the_option(name):
    with pytest.raises(ValueError, match="learned loss weight"):
        options = {"reference": "ema"} if name == "pfmm" else {"teacher": {"path": "unused.pt"}}
        _objective(name, learned_weight=True, **options)
