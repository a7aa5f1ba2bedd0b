"""ITVM (spec section 4): closed forms on the exact affine Gaussian map, the intermediate times, the EMA target."""

from __future__ import annotations

import pydantic
import pytest
import torch
from test_flow_map import SIGMA0, ExactFlowMap, data, exact_teacher, make_config

from mgm_studies.interpolants import Interpolant
from mgm_studies.models.mlp import TwoTimeMLP, VelocityMLP
from mgm_studies.objectives import ObjectiveConfig, build_objective
from mgm_studies.objectives.flow_map_base import sample_pairs
from mgm_studies.objectives.itvm import intermediate_times, short_pairs_of
from mgm_studies.objectives.si import SIConfig

STRATEGIES = ["t_minus_tau", "s_plus_tau", "uniform"]
TERMS = {"loss/diagonal", "loss/offdiagonal", "loss/initial", "loss/terminal", "time/t_minus_r"}


@pytest.fixture
def interpolant() -> Interpolant:
    return Interpolant("linear", "none", sigma0=SIGMA0)  # as in test_flow_map.py


@pytest.fixture
def float64():
    """Float64 draws: the closed forms then hold to ~1e-13, far below the float32 rounding of a quotient over t - r."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def small_models() -> tuple[TwoTimeMLP, VelocityMLP]:
    torch.manual_seed(0)
    return TwoTimeMLP(2, hidden=16, depth=2, embedding_dim=8), VelocityMLP(2, hidden=16, depth=2)


def itvm(interpolant, teacher, target_model=None, **options):
    objective = build_objective(make_config("itvm", **options), interpolant, teacher)
    if target_model is not None:
        objective.attach(target_model, 2)
    return objective


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_both_terms_vanish_on_the_exact_map_with_an_exact_target_and_not_on_a_perturbed_one(
    interpolant, float64, strategy
):
    """Exact map: u(s, s) is the marginal velocity (L_I = 0), and the semigroup X(s, t) = X(r, t, X(s, r)) makes the
    average velocity over [r, t] the target's (L_T = 0)."""
    objective = itvm(interpolant, exact_teacher(interpolant), ExactFlowMap(), eta=0.0, intermediate_time=strategy)
    x1 = data(512).double()
    exact = objective(ExactFlowMap(), x1, torch.Generator().manual_seed(1))
    perturbed = objective(ExactFlowMap(scale=1.5), x1, torch.Generator().manual_seed(1))
    assert exact.loss.shape == (512,) and exact.loss.dtype == torch.float64
    assert exact.loss.max() < 1e-12
    assert exact.diagnostics["loss/initial"] < 1e-12 and exact.diagnostics["loss/terminal"] < 1e-12
    assert perturbed.diagnostics["loss/initial"] > 1e-2 and perturbed.diagnostics["loss/terminal"] > 1e-3


def test_the_terminal_term_compares_with_the_target_network_not_the_model(interpolant, float64):
    """Exact model, perturbed EMA target: only L_T sees it."""
    objective = itvm(interpolant, exact_teacher(interpolant), ExactFlowMap(scale=1.5), eta=0.0)
    output = objective(ExactFlowMap(), data(256).double(), torch.Generator().manual_seed(1))
    assert output.diagnostics["loss/initial"] < 1e-12 and output.diagnostics["loss/terminal"] > 1e-3


def test_the_loss_is_the_weighted_sum_of_the_two_terms(interpolant):
    model, teacher = small_models()
    x1 = data(64)

    def loss(lambda_initial, lambda_terminal):
        objective = itvm(
            interpolant, teacher, model, eta=0.0, lambda_initial=lambda_initial, lambda_terminal=lambda_terminal
        )
        return objective(model, x1, torch.Generator().manual_seed(3)).loss.detach()

    torch.testing.assert_close(loss(2.0, 3.0), 2 * loss(1.0, 0.0) + 3 * loss(0.0, 1.0))
    assert (loss(1.0, 0.0) > 0).all() and loss(0.0, 1.0).mean() > 0


@pytest.mark.parametrize("tau", [0.05, 0.3])
def test_intermediate_times_follow_their_strategy(tau):
    g = torch.Generator().manual_seed(0)
    s, t = sample_pairs(20_000, None, 0.0, 1.0, g, torch.device("cpu"))
    short = torch.minimum(torch.full_like(s, tau), t - s)
    r = {strategy: intermediate_times(strategy, s, t, tau, g, "clamp") for strategy in STRATEGIES}
    for value in r.values():
        assert (s <= value).all() and (value <= t).all()
    torch.testing.assert_close(t - r["t_minus_tau"], short, atol=1e-6, rtol=0)
    torch.testing.assert_close(r["s_plus_tau"] - s, short, atol=1e-6, rtol=0)
    fraction = (r["uniform"] - s) / (t - s)
    assert abs(fraction.mean().item() - 0.5) < 0.01 and abs(fraction.var().item() - 1 / 12) < 0.005


@pytest.mark.parametrize("tau", [0.05, 0.3, 0.9])
def test_relative_tau_splits_every_pair_strictly_inside_it(tau):
    g = torch.Generator().manual_seed(0)
    s, t = (v.double() for v in sample_pairs(20_000, None, 0.0, 1.0, g, torch.device("cpu")))
    for strategy, piece in (("t_minus_tau", lambda r: t - r), ("s_plus_tau", lambda r: r - s)):
        r = intermediate_times(strategy, s, t, tau, g, "relative")
        assert (s < r).all() and (r < t).all()
        torch.testing.assert_close(piece(r), tau * (t - s))
        assert not short_pairs_of(strategy, s, t, tau, "relative").any()
        # "skip" draws r as "clamp" does; only the weights differ
        torch.testing.assert_close(
            intermediate_times(strategy, s, t, tau, g, "skip"), intermediate_times(strategy, s, t, tau, g, "clamp")
        )


@pytest.mark.parametrize("tau", [0.1, 0.2])
def test_the_short_pair_fraction_matches_its_closed_form(interpolant, tau):
    """Sorted uniform pairs on [lo, hi]: P(t - s <= tau) = 1 - (1 - tau / (hi - lo))^2 (0.36 at tau 0.2 on [0, 1])."""
    g = torch.Generator().manual_seed(0)
    s, t = sample_pairs(200_000, None, 0.0, 1.0, g, torch.device("cpu"))
    assert abs(short_pairs_of("t_minus_tau", s, t, tau, "clamp").double().mean().item() - (2 * tau - tau**2)) < 0.005
    assert not short_pairs_of("uniform", s, t, tau, "clamp").any()
    model, teacher = small_models()
    objective = itvm(interpolant, teacher, model, eta=0.0, tau=tau, short_pairs="clamp")
    width = 1 - 2 * objective.config.time_law.t_eps
    output = objective(model, data(20_000), torch.Generator().manual_seed(4))
    expected = 1 - (1 - tau / width) ** 2
    assert abs(output.diagnostics["time/short_pair_fraction"].item() - expected) < 0.015


@pytest.mark.parametrize("strategy", ["t_minus_tau", "s_plus_tau"])
def test_skip_drops_the_short_pairs_and_reweights_the_others(interpolant, strategy):
    """Same draws as clamp; short pairs (a zero row) leave the batch and the others carry its weight: the mean loss
    is clamp's mean over the kept pairs."""
    model, teacher = small_models()
    x1 = data(2000)

    def loss(handling):
        objective = itvm(
            interpolant, teacher, model, eta=0.0, tau=0.3, intermediate_time=strategy, short_pairs=handling
        )
        output = objective(model, x1, torch.Generator().manual_seed(5))
        return output.loss.detach(), output.diagnostics["time/short_pair_fraction"].item()

    (clamp, fraction), (skip, skip_fraction) = loss("clamp"), loss("skip")
    kept = skip > 0
    assert fraction == skip_fraction and abs((1 - kept.double().mean().item()) - fraction) < 1e-6
    assert 0.4 < fraction < 0.6  # 1 - (1 - 0.3 / 0.99)^2 = 0.514
    torch.testing.assert_close(skip[kept], clamp[kept] * len(skip) / kept.sum())
    torch.testing.assert_close(skip.mean(), clamp[kept].mean())


@pytest.mark.parametrize("short_pairs", ["clamp", "relative"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pairs_shorter_than_tau_give_finite_losses_and_gradients(interpolant, strategy, short_pairs):
    """max_gap 0.05 < tau = 0.1: under clamp s_plus_tau puts r = t on every pair, so only the initial term is left;
    under relative (the default) every pair is split and keeps its terminal term."""
    model, teacher = small_models()
    objective = itvm(
        interpolant, teacher, model, eta=0.0, max_gap=0.05, tau=0.1, intermediate_time=strategy, short_pairs=short_pairs
    )
    output = objective(model, data(64), torch.Generator().manual_seed(2))
    output.loss.mean().backward()
    assert torch.isfinite(output.loss).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(torch.isfinite(value) for value in output.diagnostics.values())
    if strategy == "s_plus_tau" and short_pairs == "clamp":
        assert output.diagnostics["time/t_minus_r"] == 0 and output.diagnostics["time/terminal_fraction"] == 0
        torch.testing.assert_close(output.loss.mean().detach(), output.diagnostics["loss/initial"])
    else:
        assert output.diagnostics["time/terminal_fraction"] > 0.5 and output.diagnostics["loss/terminal"] > 0


@pytest.mark.parametrize("detach_start", [False, True])
def test_forward_and_backward_reach_every_parameter_and_never_the_teacher_or_the_target(interpolant, detach_start):
    model, teacher = small_models()
    objective = itvm(interpolant, teacher, model, detach_start=detach_start)
    target = objective.target.network
    assert target is not model and not target.training
    assert all(not p.requires_grad for p in target.parameters())
    output = objective(model, data(16), torch.Generator().manual_seed(2))
    assert output.loss.shape == (16,) and torch.isfinite(output.loss).all()
    assert set(output.diagnostics) >= TERMS
    assert all(not value.requires_grad and value.dim() == 0 for value in output.diagnostics.values())
    output.loss.mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in [*teacher.parameters(), *target.parameters()])


def test_detach_start_keeps_the_loss_and_changes_the_gradient(interpolant):
    """sg on X(s, r, x_s) in the prediction: same value, the gradient flows through X(s, t, x_s) only."""
    model, teacher = small_models()
    results = []
    for detach_start in (False, True):
        model.zero_grad()
        objective = itvm(interpolant, teacher, model, eta=0.0, lambda_initial=0.0, detach_start=detach_start)
        loss = objective(model, data(64), torch.Generator().manual_seed(4)).loss
        loss.mean().backward()
        results.append((loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (loss_full, grad_full), (loss_detached, grad_detached) = results
    torch.testing.assert_close(loss_full, loss_detached)
    assert (grad_full - grad_detached).abs().max() > 1e-3 * grad_full.abs().max()


def test_on_the_diagonal_the_loss_is_the_regression_of_u_t_t_on_the_teacher(interpolant):
    """eta = 1: the `si` draws (same seed) with u(t, t, I(t)) regressed on b_teacher(t, I(t)) instead of dI(t)."""
    model, teacher = small_models()
    time_law = {"t_eps": 0.01, "name": "logit_normal"}
    output = itvm(interpolant, teacher, model, eta=1.0, time_law=time_law)(
        model, data(64), torch.Generator().manual_seed(5)
    )
    assert set(output.diagnostics) == {"loss/diagonal"}
    captured = {}

    def capture(t, x):
        captured["t"], captured["x"] = t, x
        return torch.zeros_like(x)

    build_objective(SIConfig(time_law=time_law), interpolant)(capture, data(64), torch.Generator().manual_seed(5))
    t, xt = captured["t"], captured["x"]
    with torch.no_grad():
        expected = (model(t, t, xt) - teacher(t, xt)).square().sum(dim=1)
    torch.testing.assert_close(output.loss.detach(), expected)


def test_after_step_moves_the_target_by_its_decay_and_the_state_round_trips(interpolant):
    model, teacher = small_models()
    objective = itvm(interpolant, teacher, model, target_ema=0.5)
    before = [p.clone() for p in objective.target.network.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    objective.after_step(model, "critic", 0)  # another phase's step leaves the target alone
    for old, new in zip(before, objective.target.network.parameters(), strict=True):
        torch.testing.assert_close(new, old)
    objective.after_step(model, "model", 0)
    for old, new in zip(before, objective.target.network.parameters(), strict=True):
        torch.testing.assert_close(new, old + 0.5)  # halfway from old to old + 1

    state = objective.state_dict()
    fresh = itvm(interpolant, teacher, TwoTimeMLP(2, hidden=16, depth=2, embedding_dim=8), target_ema=0.5)
    assert any((a - b).abs().max() > 0 for a, b in zip(before, fresh.target.network.parameters(), strict=True))
    fresh.load_state_dict(state)
    for old, new in zip(before, fresh.target.network.parameters(), strict=True):
        torch.testing.assert_close(new, old + 0.5)


def test_target_ema_zero_copies_the_model_after_every_step(interpolant):
    model, teacher = small_models()
    objective = itvm(interpolant, teacher, model, target_ema=0.0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    objective.after_step(model, "model", 0)
    for p, q in zip(model.parameters(), objective.target.network.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0)


def test_the_loss_refuses_to_run_before_attach(interpolant):
    model, teacher = small_models()
    objective = itvm(interpolant, teacher)
    for call in (lambda: objective(model, data(8), torch.Generator().manual_seed(0)), objective.state_dict):
        with pytest.raises(RuntimeError, match="attach"):
            call()


def test_config_rejects_bad_options():
    adapter = pydantic.TypeAdapter(ObjectiveConfig)
    teacher = {"run": "some-run"}
    config = adapter.validate_python({"name": "itvm", "teacher": teacher, "intermediate_time": "uniform"})
    assert (config.tau, config.target_ema, config.lambda_initial, config.detach_start) == (0.1, 0.9, 1.0, False)
    for bad in (
        {"name": "itvm"},  # names its teacher
        {"name": "itvm", "teacher": teacher, "tau": 0.0},
        {"name": "itvm", "teacher": teacher, "tau": 1.5},
        {"name": "itvm", "teacher": teacher, "target_ema": 1.0},
        {"name": "itvm", "teacher": teacher, "lambda_terminal": -1.0},
        {"name": "itvm", "teacher": teacher, "intermediate_time": "midpoint"},
        {"name": "itvm", "teacher": teacher, "derivative": "jvp"},
        {"name": "itvm", "teacher": teacher, "short_pairs": "relative", "tau": 1.0},
        {"name": "itvm", "teacher": teacher, "short_pairs": "drop"},
    ):
        with pytest.raises(pydantic.ValidationError):
            adapter.validate_python(bad)
