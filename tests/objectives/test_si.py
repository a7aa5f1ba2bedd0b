"""The `si` loss against its closed form on a Gaussian target (spec sections 2 and 7)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mgm_studies.interpolants import Interpolant
from mgm_studies.objectives import build_objective
from mgm_studies.objectives.si import SIConfig


class ExactVelocity(nn.Module):
    """The analytic marginal velocity b(t, x) of data N(mean, sd^2 I): a 'model' with no parameters."""

    def __init__(self, interpolant: Interpolant, mean: torch.Tensor, sd: float) -> None:
        super().__init__()
        self.interpolant, self.mean, self.sd = interpolant, mean, sd

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.interpolant.velocity_gaussian(t, x, self.mean, self.sd)


@pytest.mark.parametrize(
    ("schedule", "gamma", "t_eps"),
    [("linear", "none", 0.0), ("trig", "none", 0.0), ("linear", "sin2", 0.0), ("linear", "sqrt", 1e-3)],
)
def test_loss_of_exact_velocity_is_the_irreducible_conditional_variance(schedule, gamma, t_eps):
    torch.manual_seed(0)
    interpolant = Interpolant(schedule, gamma, gamma_scale=0.5, sigma0=1.0)
    mean, sd, dim, n = torch.tensor([1.5, -0.5]), 0.7, 2, 400_000
    objective = build_objective(SIConfig(time_law={"t_eps": t_eps}), interpolant)
    generator = torch.Generator().manual_seed(1)
    x1 = mean + sd * torch.randn(n, dim, generator=generator)
    loss = objective(ExactVelocity(interpolant, mean, sd), x1, generator).loss
    assert loss.shape == (n,)
    # E_t[ conditional variance ] over t ~ U[t_eps, 1 - t_eps], by the midpoint rule on a fine grid.
    grid = t_eps + (1 - 2 * t_eps) * (torch.arange(20_000, dtype=torch.float64) + 0.5) / 20_000
    expected = interpolant.conditional_variance_gaussian(grid, dim, sd).mean().item()
    stderr = loss.double().std().item() / math.sqrt(n)
    assert abs(loss.double().mean().item() - expected) < 4 * stderr + 1e-3 * expected


def test_a_wrong_velocity_pays_more_than_the_irreducible_loss():
    interpolant = Interpolant("linear", "none")
    mean, sd = torch.tensor([1.0, 1.0]), 0.5
    objective = build_objective(SIConfig(), interpolant)
    generator = torch.Generator().manual_seed(0)
    x1 = mean + sd * torch.randn(100_000, 2, generator=generator)
    exact = objective(ExactVelocity(interpolant, mean, sd), x1, torch.Generator().manual_seed(3)).loss.mean()
    shifted = objective(ExactVelocity(interpolant, mean + 0.3, sd), x1, torch.Generator().manual_seed(3)).loss.mean()
    assert shifted > exact + 0.05
