"""pfmm (spec 3.3): the exact map is a fixed point of the two-step reference (an EMA target, or Heun on a teacher)."""

from __future__ import annotations

import pydantic
import pytest
import torch
from test_flow_map import SIGMA0, ExactFlowMap, data, exact_teacher
from test_itvm import STRATEGIES, float64, small_models  # noqa: F401 -- float64: a fixture, used by name

from mgm_studies.interpolants import Interpolant
from mgm_studies.objectives import ObjectiveConfig, build_objective
from mgm_studies.objectives.pfmm import PFMMConfig, heun_average_velocity, heun_map

TEACHER = {"path": "unused.pt"}


@pytest.fixture
def interpolant() -> Interpolant:
    return Interpolant("linear", "none", sigma0=SIGMA0)  # as in test_flow_map.py


def pfmm(interpolant, teacher=None, target_model=None, **options):
    if options.get("reference", "teacher") == "teacher":
        options.setdefault("teacher", TEACHER)
    objective = build_objective(PFMMConfig(**options), interpolant, teacher)
    if target_model is not None:
        objective.attach(target_model, 2)
    return objective


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_loss_vanishes_on_the_exact_map_with_an_exact_ema_reference(interpolant, strategy):
    objective = pfmm(interpolant, None, ExactFlowMap(), reference="ema", eta=0.0, intermediate_time=strategy)
    assert not objective.needs_teacher
    x1 = data(512).double()
    exact = objective(ExactFlowMap(), x1, torch.Generator().manual_seed(1))
    perturbed = objective(ExactFlowMap(scale=1.5), x1, torch.Generator().manual_seed(1))
    assert exact.loss.shape == (512,) and exact.loss.max() < 1e-12
    assert perturbed.loss.mean() > 1e-2


@pytest.mark.usefixtures("float64")
def test_with_the_exact_teacher_the_loss_is_the_heun_error_and_falls_as_its_square(interpolant):
    """Heun is second order: 4x the steps divides the map error by ~16 and the squared residual by ~256."""
    x1 = data(256).double()

    def mean_loss(heun_steps):
        objective = pfmm(interpolant, exact_teacher(interpolant), eta=0.0, heun_steps=heun_steps)
        assert objective.needs_teacher
        return objective(ExactFlowMap(), x1, torch.Generator().manual_seed(1)).loss.mean().item()

    coarse, fine = mean_loss(4), mean_loss(16)
    assert fine < 1e-6 and 100 < coarse / fine < 400
    perturbed = pfmm(interpolant, exact_teacher(interpolant), eta=0.0, heun_steps=16)
    assert perturbed(ExactFlowMap(scale=1.5), x1, torch.Generator().manual_seed(1)).loss.mean() > 1e-2


def test_heun_map_is_the_identity_on_zero_intervals_and_exact_for_a_constant_velocity():
    x, s, t = torch.randn(8, 2), torch.rand(8), torch.rand(8)
    torch.testing.assert_close(heun_map(lambda t_, x_: x_**2, s, s, x, 3), x)
    torch.testing.assert_close(heun_map(lambda t_, x_: torch.ones_like(x_), s, t, x, 3), x + (t - s)[:, None])


def test_pairs_with_no_length_fall_back_to_the_reference_velocity(interpolant):
    """max_gap 1e-5: every t - s is below the guard; the target is one Heun step's average velocity, undivided."""
    model, teacher = small_models()
    objective = pfmm(interpolant, teacher, eta=0.0, max_gap=1e-5)
    output = objective(model, data(64), torch.Generator().manual_seed(2))
    output.loss.mean().backward()
    assert torch.isfinite(output.loss).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())
    captured = {}
    objective.offdiagonal_residual = lambda model_, s, t, xs, g: captured.update(s=s, t=t, xs=xs) or xs
    objective(model, data(64), torch.Generator().manual_seed(2))
    s, t, xs = captured["s"], captured["t"], captured["xs"]
    with torch.no_grad():
        expected = (model(s, t, xs) - heun_average_velocity(teacher, s, t, xs, 1)).square().sum(dim=1)
    torch.testing.assert_close(output.loss.detach(), expected)


@pytest.mark.parametrize("reference", ["teacher", "ema"])
def test_forward_and_backward_reach_every_parameter_and_never_the_teacher_or_the_target(interpolant, reference):
    model, teacher = small_models()
    objective = pfmm(interpolant, teacher if reference == "teacher" else None, model, reference=reference)
    output = objective(model, data(16), torch.Generator().manual_seed(2))
    assert output.loss.shape == (16,) and torch.isfinite(output.loss).all()
    assert set(output.diagnostics) == {"loss/diagonal", "loss/offdiagonal", "time/short_pair_fraction"}
    output.loss.mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in teacher.parameters())
    if reference == "ema":
        assert all(p.grad is None and not p.requires_grad for p in objective.target.network.parameters())


def test_the_ema_reference_needs_attach_and_checkpoints_its_target(interpolant):
    model, _ = small_models()
    objective = pfmm(interpolant, reference="ema", target_ema=0.5)
    with pytest.raises(RuntimeError, match="attach"):
        objective(model, data(8), torch.Generator().manual_seed(0))
    objective.attach(model, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    objective.after_step(model, "model", 0)
    for p, q in zip(model.parameters(), objective.target.network.parameters(), strict=True):
        torch.testing.assert_close(q, p - 0.5)
    fresh = pfmm(interpolant, reference="ema", target_ema=0.5, target_model=small_models()[0])
    fresh.load_state_dict(objective.state_dict())
    for p, q in zip(model.parameters(), fresh.target.network.parameters(), strict=True):
        torch.testing.assert_close(q, p - 0.5)
    teacher_reference = pfmm(interpolant, reference="teacher", target_model=model)  # holds no network
    assert teacher_reference.state_dict() == {}


def test_config_names_a_teacher_exactly_when_the_reference_is_the_teacher():
    adapter = pydantic.TypeAdapter(ObjectiveConfig)
    assert adapter.validate_python({"name": "pfmm", "teacher": TEACHER}).heun_steps == 4
    assert adapter.validate_python({"name": "pfmm", "reference": "ema"}).teacher is None
    with pytest.raises(pydantic.ValidationError, match="names its teacher"):
        adapter.validate_python({"name": "pfmm"})
    with pytest.raises(pydantic.ValidationError, match="uses no teacher"):
        adapter.validate_python({"name": "pfmm", "reference": "ema", "teacher": TEACHER})
    for bad in (
        {"name": "pfmm", "teacher": TEACHER, "heun_steps": 0},
        {"name": "pfmm", "teacher": TEACHER, "reference": "student"},
        {"name": "pfmm", "reference": "ema", "tau": 0.0},
    ):
        with pytest.raises(pydantic.ValidationError):
            adapter.validate_python(bad)


@pytest.mark.parametrize("reference", ["teacher", "ema"])
def test_short_pairs_are_logged_and_skip_reweights_the_kept_pairs(interpolant, reference):
    """pfmm with t_minus_tau at tau 0.3: about half the pairs are short (r = s under clamp); skip zeroes their rows and
    scales the others by n / n_kept; relative splits them all."""
    model, teacher = small_models()
    x1 = data(2000)

    def run(handling):
        objective = pfmm(interpolant, teacher, model, reference=reference, eta=0.0, tau=0.3, short_pairs=handling)
        output = objective(model, x1, torch.Generator().manual_seed(5))
        return output.loss.detach(), output.diagnostics["time/short_pair_fraction"].item()

    (clamp, fraction), (skip, _), (_, relative_fraction) = run("clamp"), run("skip"), run("relative")
    kept = skip > 0
    assert 0.4 < fraction < 0.6 and relative_fraction == 0
    assert abs((1 - kept.double().mean().item()) - fraction) < 1e-6
    torch.testing.assert_close(skip[kept], clamp[kept] * len(skip) / kept.sum())
