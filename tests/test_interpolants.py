"""Interpolants: the time convention, closed-form derivatives, symmetry, and the Gaussian closed forms."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mgm_studies.interpolants import Interpolant

SCHEDULES = ["linear", "trig", "vp", "poly"]
GAMMAS = ["none", "sqrt", "sin2"]
ALL = list(itertools.product(SCHEDULES, GAMMAS))
COEFFICIENTS = [("alpha", "alpha_dot"), ("beta", "beta_dot"), ("gamma", "gamma_dot")]


def draw(shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize(("schedule", "gamma"), ALL)
def test_time_convention_noise_at_zero_data_at_one(schedule, gamma):
    """x0 (noise) at t = 0, x1 (data) at t = 1: the one convention every module relies on."""
    interpolant = Interpolant(schedule, gamma, gamma_scale=0.8)
    x0, x1, z = draw((4, 3))
    at_one = interpolant.sample(x0, x1, z, torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(at_one.xt, x1, atol=1e-12, rtol=0)
    at_zero = interpolant.sample(x0, x1, z, torch.zeros(4, dtype=torch.float64))
    if schedule == "vp":
        # vp never reaches pure noise: beta(0) = exp(-T(1) / 2) = exp(-(0.1 + 19.9 / 2) / 2), about 0.0066.
        beta0 = math.exp(-(0.1 + 19.9 / 2) / 2)
        expected = math.sqrt(1 - beta0**2) * x0 + beta0 * x1
        torch.testing.assert_close(at_zero.xt, expected, atol=1e-12, rtol=0)
        deviation = (at_zero.xt - x0).abs().max().item()
        assert 1e-3 < deviation < 0.05
    else:
        torch.testing.assert_close(at_zero.xt, x0, atol=1e-12, rtol=0)


@pytest.mark.parametrize("schedule", ["linear", "trig", "poly"])
def test_end_values_of_the_schedule(schedule):
    interpolant = Interpolant(schedule, "sin2")
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(interpolant.alpha(ends), torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(interpolant.beta(ends), torch.tensor([0.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("gamma", GAMMAS)
def test_gamma_vanishes_at_both_ends(gamma):
    values = Interpolant("linear", gamma, gamma_scale=2.0).gamma(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(values, torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize(("schedule", "gamma"), ALL)
def test_closed_form_derivatives_match_autograd(schedule, gamma):
    interpolant = Interpolant(schedule, gamma, gamma_scale=0.7, poly_power=2.5)
    t = torch.linspace(0.01, 0.99, 41, dtype=torch.float64, requires_grad=True)
    for value_name, derivative_name in COEFFICIENTS:
        value = getattr(interpolant, value_name)(t)
        if not value.requires_grad:  # gamma `none` is a constant zero
            expected = torch.zeros_like(t)
        else:
            (expected,) = torch.autograd.grad(value.sum(), t)
        closed = getattr(interpolant, derivative_name)(t.detach())
        torch.testing.assert_close(closed, expected, rtol=1e-10, atol=1e-10, msg=f"{derivative_name}")


@pytest.mark.parametrize(("schedule", "gamma"), ALL)
def test_dxt_is_the_time_derivative_of_xt(schedule, gamma):
    interpolant = Interpolant(schedule, gamma, gamma_scale=0.7)
    x0, x1, z = draw((7, 2), seed=1)
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    path = interpolant.sample(x0, x1, z, t)
    _, tangent = torch.func.jvp(lambda tt: interpolant.sample(x0, x1, z, tt).xt, (t,), (torch.ones_like(t),))
    torch.testing.assert_close(path.dxt, tangent, rtol=1e-10, atol=1e-10)


def test_poly_with_power_one_is_linear():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    poly, linear = Interpolant("poly", poly_power=1.0), Interpolant("linear")
    for name in ("alpha", "beta", "alpha_dot", "beta_dot"):
        torch.testing.assert_close(getattr(poly, name)(t), getattr(linear, name)(t))


@pytest.mark.parametrize(
    ("kwargs", "symmetric"),
    [
        ({"schedule": "linear"}, True),
        ({"schedule": "trig", "gamma": "sqrt"}, True),
        ({"schedule": "poly", "poly_power": 1.0, "gamma": "sin2"}, True),
        ({"schedule": "poly", "poly_power": 2.0}, False),
        ({"schedule": "vp"}, False),
    ],
)
def test_symmetric_flag_agrees_with_the_coefficients(kwargs, symmetric):
    interpolant = Interpolant(**kwargs)
    assert interpolant.symmetric is symmetric
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    mirrored = torch.allclose(interpolant.alpha(t), interpolant.beta(1 - t), atol=1e-12) and torch.allclose(
        interpolant.gamma(t), interpolant.gamma(1 - t), atol=1e-12
    )
    assert mirrored is symmetric


@pytest.mark.parametrize(
    ("kwargs", "ends"),
    [
        ({"schedule": "linear"}, (False, False)),
        ({"schedule": "trig", "gamma": "sin2"}, (False, False)),
        ({"schedule": "linear", "gamma": "sqrt"}, (True, True)),
        ({"schedule": "vp"}, (False, True)),
        ({"schedule": "poly", "poly_power": 0.5}, (True, False)),
    ],
)
def test_singular_ends_flag_where_derivatives_blow_up(kwargs, ends):
    interpolant = Interpolant(**kwargs)
    assert interpolant.singular_ends == ends
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    slopes = torch.stack([getattr(interpolant, d)(t).abs() for _, d in COEFFICIENTS]).amax(dim=0)
    assert tuple(bool(v) for v in ~torch.isfinite(slopes)) == ends


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"schedule": "cosine"}, "schedule"),
        ({"gamma": "brownian"}, "gamma"),
        ({"poly_power": 0.0}, "poly_power"),
        ({"gamma_scale": -0.1}, "gamma_scale"),
        ({"sigma0": 0.0}, "sigma0"),
        ({"vp_beta_min": 0.0}, "vp_beta_min"),
        ({"vp_beta_min": 5.0, "vp_beta_max": 1.0}, "vp_beta_max"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Interpolant(**kwargs)


def test_noise_has_scale_sigma0_and_follows_the_generator():
    interpolant = Interpolant(sigma0=2.5)
    a = interpolant.noise((200_000,), torch.Generator().manual_seed(3))
    b = interpolant.noise((200_000,), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert abs(a.std().item() - 2.5) < 0.02 and abs(a.mean().item()) < 0.02


@pytest.mark.parametrize(
    ("schedule", "gamma", "t"),
    [("linear", "none", 0.3), ("trig", "sin2", 0.6), ("vp", "none", 0.5), ("poly", "sqrt", 0.8)],
)
def test_gaussian_velocity_and_conditional_variance_match_monte_carlo(schedule, gamma, t):
    """In 1-D, E[dI | I_t] is linear in I_t: a least-squares fit of dI on (1, I_t) estimates it."""
    interpolant = Interpolant(schedule, gamma, gamma_scale=0.5, sigma0=1.3)
    mean, sd, n = torch.tensor([0.8], dtype=torch.float64), 0.6, 400_000
    g = torch.Generator().manual_seed(4)
    x0 = interpolant.noise((n, 1), g).double()
    x1 = mean + sd * torch.randn(n, 1, generator=g, dtype=torch.float64)
    z = torch.randn(n, 1, generator=g, dtype=torch.float64)
    times = torch.full((n,), t, dtype=torch.float64)
    path = interpolant.sample(x0, x1, z, times)
    design = torch.cat([torch.ones_like(path.xt), path.xt], dim=1)
    coefficients = torch.linalg.lstsq(design, path.dxt).solution.squeeze(1)  # (intercept, slope)
    probes = torch.tensor([[-1.0], [0.0], [1.5]], dtype=torch.float64)
    exact = interpolant.velocity_gaussian(times[:3], probes, mean, sd).squeeze(1)
    fitted = coefficients[0] + coefficients[1] * probes.squeeze(1)
    torch.testing.assert_close(exact, fitted, atol=0.02, rtol=0.02)

    residual = (path.dxt - interpolant.velocity_gaussian(times, path.xt, mean, sd)).square().sum(dim=1)
    expected = interpolant.conditional_variance_gaussian(times[:1], 1, sd).item()
    assert abs(residual.mean().item() - expected) < 0.03 * expected


def test_conditional_variance_scales_with_dimension_and_has_the_linear_closed_form():
    # Linear, no gamma: Var dI - Cov^2 / var_t = sigma0^2 sd^2 / var_t.
    interpolant = Interpolant("linear", sigma0=1.5)
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    var_t = (1 - t) ** 2 * 1.5**2 + t**2 * 0.4**2
    expected = 3 * 1.5**2 * 0.4**2 / var_t
    torch.testing.assert_close(interpolant.conditional_variance_gaussian(t, 3, 0.4), expected)
    torch.testing.assert_close(interpolant.marginal_variance_gaussian(t, 0.4), var_t)


def test_gaussian_velocity_is_finite_at_the_singular_end_of_vp():
    interpolant = Interpolant("vp", "sqrt")
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    velocity = interpolant.velocity_gaussian(t, x, torch.zeros(3, dtype=torch.float64), 0.5)
    assert torch.isfinite(velocity).all()


@pytest.mark.parametrize("schedule", ["linear", "trig", "vp", "poly"])
def test_without_gamma_keeps_the_schedule_and_drops_the_noise_term(schedule):
    noisy = Interpolant(
        schedule, "sqrt", gamma_scale=0.3, poly_power=3.0, vp_beta_min=0.2, vp_beta_max=10.0, sigma0=2.0
    )
    path = noisy.without_gamma()
    t = torch.linspace(0.01, 0.99, 17)
    for name in ("alpha", "beta", "alpha_dot", "beta_dot"):
        assert torch.equal(getattr(path, name)(t), getattr(noisy, name)(t)), name
    assert torch.equal(path.gamma(t), torch.zeros_like(t)) and path.sigma0 == 2.0 and path.gamma_kind == "none"
