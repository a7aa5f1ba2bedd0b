"""Samplers: orders of convergence, NFE counts, and transport of noise to a Gaussian target."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mgm_studies.interpolants import Interpolant
from mgm_studies.sampling import SAMPLERS, SampleResult, euler, heun


def decay(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return -x


def error_of(sampler, num_steps: int, t0: float = 0.0, t1: float = 1.0) -> float:
    x0 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    exact = x0 * math.exp(-(t1 - t0))
    return (sampler(decay, x0, num_steps, t0=t0, t1=t1).x - exact).abs().max().item()


@pytest.mark.parametrize(("sampler", "order"), [(euler, 1), (heun, 2)])
def test_error_shrinks_at_the_order_of_the_method(sampler, order):
    errors = [error_of(sampler, n, t0=0.2, t1=0.9) for n in (8, 16, 32, 64)]
    ratios = [coarse / fine for coarse, fine in itertools.pairwise(errors)]
    for ratio in ratios:
        assert abs(math.log2(ratio) - order) < 0.15, (errors, ratios)
    assert errors[-1] < (0.01 if order == 1 else 1e-4)


@pytest.mark.parametrize(("name", "per_step"), [("euler", 1), ("heun", 2)])
def test_nfe_counts_every_velocity_call(name, per_step):
    calls = []

    def counting(t, x):
        calls.append(t)
        return -x

    result = SAMPLERS[name](counting, torch.ones(5, 2), 7)
    assert isinstance(result, SampleResult)
    assert result.nfe == len(calls) == 7 * per_step
    # times are per sample, in the state's dtype, from t0 = 0 up to (at most) t1 = 1
    assert all(t.shape == (5,) and t.dtype == torch.float32 for t in calls)
    assert calls[0][0].item() == 0.0 and max(t[0].item() for t in calls) <= 1.0


@pytest.mark.parametrize("sampler", [euler, heun])
def test_runs_without_building_a_graph_and_refuses_zero_steps(sampler):
    weight = torch.tensor(2.0, requires_grad=True)
    result = sampler(lambda t, x: -weight * x, torch.ones(3, 1), 2)
    assert not result.x.requires_grad
    with pytest.raises(ValueError, match="num_steps"):
        sampler(decay, torch.ones(3, 1), 0)


@pytest.mark.parametrize("gamma", ["none", "sin2"])
def test_heun_on_the_exact_gaussian_velocity_lands_on_the_data_law(gamma):
    interpolant = Interpolant("linear", gamma, gamma_scale=0.5, sigma0=1.0)
    mean, sd = torch.tensor([2.0, -1.0]), 0.4

    def velocity(t, x):
        return interpolant.velocity_gaussian(t, x, mean, sd)

    noise = interpolant.noise((50_000, 2), torch.Generator().manual_seed(0))
    result = heun(velocity, noise, 50)
    assert result.nfe == 100
    torch.testing.assert_close(result.x.mean(dim=0), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(result.x.std(dim=0), torch.full((2,), sd), atol=0.01, rtol=0)
