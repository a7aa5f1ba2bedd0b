"""Flow-map objectives against the exact affine flow map of a Gaussian target (spec sections 3 and 7)."""

from __future__ import annotations

import pydantic
import pytest
import torch
from torch import nn

from mgm_studies.interpolants import Interpolant
from mgm_studies.models.mlp import TwoTimeMLP, VelocityMLP
from mgm_studies.objectives import OBJECTIVES, ObjectiveConfig, build_objective
from mgm_studies.objectives.flow_map_base import sample_pairs
from mgm_studies.objectives.si import SIConfig

FLOW_MAP_NAMES = sorted(name for name, entry in OBJECTIVES.items() if entry.objective.model_kind == "two_time")
DERIVATIVE_NAMES = [name for name in FLOW_MAP_NAMES if "derivative" in OBJECTIVES[name].config.model_fields]
MEAN, SD, SIGMA0 = torch.tensor([1.5, -0.5]), 0.7, 1.2


def make_config(name: str, **options):
    config_class = OBJECTIVES[name].config
    if "teacher" in config_class.model_fields:  # the objective gets its teacher directly in these tests
        options.setdefault("teacher", {"path": "unused.pt"})
    return config_class(name=name, **options)


class ExactFlowMap(nn.Module):
    """The exact two-time model of data N(MEAN, SD^2 I) under the linear interpolant, times `scale`.

    X(s, t, x) = t m + (sd_t / sd_s)(x - s m), so u = (X - x) / (t - s) = m + c(s, t)(x - s m) with
    c = (sd_t^2 - sd_s^2) / ((t - s) sd_s (sd_s + sd_t)) = (sigma0^2 (s + t - 2) + sd^2 (s + t)) / (sd_s (sd_s + sd_t)):
    no 0 / 0 at t = s, where c is the gain of the marginal velocity. Computed in float64.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def _sd(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((1 - t).square() * SIGMA0**2 + t.square() * SD**2)

    def forward(self, s: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        s, t, x64 = s.double(), t.double(), x.double()
        sd_s, sd_t = self._sd(s), self._sd(t)
        c = (SIGMA0**2 * (s + t - 2) + SD**2 * (s + t)) / (sd_s * (sd_s + sd_t))
        m = MEAN.double()
        u = m + c[:, None] * (x64 - s[:, None] * m)
        return (self.scale * u).to(x.dtype)

    def flow_map(self, s: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x + (t - s)[:, None] * self(s, t, x)

    def velocity(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self(t, t, x)


@pytest.fixture
def interpolant() -> Interpolant:
    return Interpolant("linear", "none", sigma0=SIGMA0)


def exact_teacher(interpolant: Interpolant):
    return lambda t, x: interpolant.velocity_gaussian(t, x, MEAN, SD)


def data(n: int, seed: int = 0) -> torch.Tensor:
    return MEAN + SD * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def test_exact_map_is_the_affine_map_of_spec_7_and_its_diagonal_the_marginal_velocity(interpolant):
    g = torch.Generator().manual_seed(0)
    s, t = sample_pairs(64, None, 0.0, 1.0, g, torch.device("cpu"))
    x = 2 * torch.randn(64, 2, generator=g)
    sd_s, sd_t = (interpolant.marginal_variance_gaussian(v, SD).sqrt()[:, None] for v in (s, t))
    expected = interpolant.beta(t)[:, None] * MEAN + sd_t / sd_s * (x - interpolant.beta(s)[:, None] * MEAN)
    torch.testing.assert_close(ExactFlowMap().flow_map(s, t, x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ExactFlowMap().velocity(t, x), exact_teacher(interpolant)(t, x), rtol=1e-5, atol=1e-5)


# pfmm's reference is K Heun steps of the teacher: not exact, covered by tests/objectives/test_pfmm.py.
@pytest.mark.parametrize(
    ("name", "options"),
    [(name, {}) for name in FLOW_MAP_NAMES if name != "pfmm"] + [("emd", {"stopgrad_jvp": True})],
)
def test_offdiagonal_residual_vanishes_on_the_exact_map_and_not_on_a_perturbed_one(interpolant, name, options):
    objective = build_objective(
        make_config(name, diagonal_fraction=0.0, **options), interpolant, exact_teacher(interpolant)
    )
    objective.attach(ExactFlowMap(), 2)  # an EMA target (itvm) is then the exact map too
    x1 = data(512)
    exact = objective(ExactFlowMap(), x1, torch.Generator().manual_seed(1))
    perturbed = objective(ExactFlowMap(scale=1.5), x1, torch.Generator().manual_seed(1))
    assert exact.loss.shape == (512,) and "loss/diagonal" not in exact.diagnostics
    assert exact.loss.max() < 1e-10
    assert perturbed.loss.mean() > 1e-3


@pytest.mark.parametrize("name", FLOW_MAP_NAMES)
def test_on_the_diagonal_the_loss_is_the_velocity_regression_of_u_t_t(interpolant, name):
    """All on the diagonal: the `si` loss of v(t, x) = u(t, t, x) (self-distillation), or its teacher regression."""
    torch.manual_seed(0)
    model, teacher = TwoTimeMLP(2, hidden=16, depth=2, embedding_dim=8), VelocityMLP(2, hidden=16, depth=2)
    time_law = {"t_eps": 0.01, "name": "logit_normal"}
    objective = build_objective(make_config(name, diagonal_fraction=1.0, time_law=time_law), interpolant, teacher)
    objective.attach(model, 2)
    x1 = data(64)
    output = objective(model, x1, torch.Generator().manual_seed(5))
    assert set(output.diagnostics) == {"loss/diagonal"}
    si = build_objective(SIConfig(time_law=time_law), interpolant)
    if objective.needs_teacher:
        # Let si draw t and I(t) from the same seed, then regress u(t, t, I(t)) on the teacher instead of dI(t).
        captured = {}

        def regress_on_teacher(t, x):
            captured["t"], captured["x"] = t, x
            return torch.zeros_like(x)

        si(regress_on_teacher, x1, torch.Generator().manual_seed(5))
        t, xt = captured["t"], captured["x"]
        with torch.no_grad():
            expected = (model(t, t, xt) - teacher(t, xt)).square().sum(dim=1)
    else:
        expected = si(lambda t, x: model(t, t, x), x1, torch.Generator().manual_seed(5)).loss
    torch.testing.assert_close(output.loss.detach(), expected.detach())


@pytest.mark.parametrize(
    ("name", "options"),
    [(name, {}) for name in FLOW_MAP_NAMES]
    + [("emd", {"stopgrad_jvp": True})]
    + [(name, {"derivative": "finite_difference"}) for name in DERIVATIVE_NAMES],
)
def test_forward_and_backward_reach_every_parameter_and_never_the_teacher(interpolant, name, options):
    torch.manual_seed(0)
    model, teacher = TwoTimeMLP(2, hidden=16, depth=2, embedding_dim=8), VelocityMLP(2, hidden=16, depth=2)
    objective = build_objective(make_config(name, **options), interpolant, teacher)
    objective.attach(model, 2)
    output = objective(model, data(16), torch.Generator().manual_seed(2))
    assert output.loss.shape == (16,) and torch.isfinite(output.loss).all()
    assert set(output.diagnostics) >= {"loss/diagonal", "loss/offdiagonal"}
    assert all(not value.requires_grad and value.dim() == 0 for value in output.diagnostics.values())
    output.loss.mean().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name
    assert all(param.grad is None for param in teacher.parameters())


@pytest.mark.parametrize(
    ("name", "options"), [(name, {}) for name in DERIVATIVE_NAMES] + [("emd", {"stopgrad_jvp": True})]
)
def test_jvp_and_finite_difference_agree_in_loss_and_gradient(interpolant, name, options):
    """Also pins that the gradient flows through the JVP's tangent output: FD gradients are plain autograd.

    In float64 with h = 1e-6, so that the central difference's truncation and rounding errors stay far below the
    tolerance (in float32 the default sinusoidal time features, t scaled by 1000, turn by about a radian per 1e-3).
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        model, teacher = TwoTimeMLP(2, hidden=16, depth=2, embedding_dim=8), VelocityMLP(2, hidden=16, depth=2)
        x1, results = data(64).double(), []
        for derivative in ("jvp", "finite_difference"):
            config = make_config(name, diagonal_fraction=0.0, derivative=derivative, fd_step=1e-6, **options)
            model.zero_grad()
            loss = build_objective(config, interpolant, teacher)(model, x1, torch.Generator().manual_seed(3)).loss
            loss.mean().backward()
            results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    finally:
        torch.set_default_dtype(previous)
    (loss_jvp, grads_jvp), (loss_fd, grads_fd) = results
    assert loss_jvp.dtype == torch.float64
    torch.testing.assert_close(loss_jvp, loss_fd, rtol=1e-4, atol=1e-8)
    for grad_jvp, grad_fd in zip(grads_jvp, grads_fd, strict=True):
        torch.testing.assert_close(grad_jvp, grad_fd, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("num_steps", [1, 4])
def test_sampling_with_the_exact_map_lands_on_the_data_law(interpolant, num_steps):
    objective = build_objective(make_config("lsd"), interpolant)
    x0 = interpolant.noise((200_000, 2), torch.Generator().manual_seed(4))
    result = objective.sample(ExactFlowMap(), x0, num_steps)
    assert result.nfe == num_steps and result.x.shape == x0.shape
    torch.testing.assert_close(result.x.mean(dim=0), MEAN, atol=0.01, rtol=0)
    torch.testing.assert_close(result.x.std(dim=0), torch.full((2,), SD), atol=0.01, rtol=0)


@pytest.mark.parametrize("max_gap", [None, 0.2])
def test_pairs_are_ordered_inside_the_interval_and_respect_the_gap_cap(max_gap):
    s, t = sample_pairs(50_000, max_gap, 0.01, 0.99, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert (s >= 0.01).all() and (t <= 0.99).all() and (s <= t).all()
    cap = 1.0 if max_gap is None else max_gap
    assert (t - s).max() <= cap + 1e-6 and (t - s).max() > 0.9 * 0.98 * cap
    if max_gap is None:  # the law of a sorted pair of uniforms on [lo, hi]: E[s] = lo + (hi - lo) / 3
        assert abs(s.mean().item() - (0.01 + 0.98 / 3)) < 0.01


def test_the_annealed_gap_cap_grows_linearly_to_one_and_bounds_the_drawn_pairs():
    config = make_config("lsd", max_gap=0.2, max_gap_anneal=0.5)
    assert [config.gap_cap(step, 1000) for step in (0, 250, 500, 900)] == pytest.approx([0.2, 0.6, 1.0, 1.0])
    assert make_config("lsd", max_gap=0.2).gap_cap(900, 1000) == 0.2 and make_config("lsd").gap_cap(5, 10) is None
    objective = build_objective(config, Interpolant("linear", "none"))
    model = TwoTimeMLP(2, hidden=16, depth=2, embedding_dim=8)
    for step, cap in ((0, 0.2), (250, 0.6)):
        objective.begin_step(step, 1000)
        with torch.no_grad():
            output = objective(model, torch.randn(4096, 2), torch.Generator().manual_seed(step))
        assert output.diagnostics["time/max_gap"].item() == pytest.approx(cap)
    draws = []
    original = objective.offdiagonal_residual
    objective.offdiagonal_residual = lambda m, s, t, xs, g: draws.append(t - s) or original(m, s, t, xs, g)
    for step in (0, 250):
        objective.begin_step(step, 1000)
        with torch.no_grad():
            objective(model, torch.randn(4096, 2), torch.Generator().manual_seed(9))
    assert draws[0].max() <= 0.2 and 0.5 < draws[1].max() <= 0.6


def test_config_rejects_misspelt_options_a_bad_diagonal_fraction_and_options_it_does_not_have():
    adapter = pydantic.TypeAdapter(ObjectiveConfig)
    teacher = {"run": "some-run"}
    assert adapter.validate_python({"name": "emd", "stopgrad_jvp": True, "teacher": teacher}).stopgrad_jvp is True
    for bad in (
        {"name": "lsd", "etaa": 0.5},
        {"name": "lsd", "diagonal_fraction": 1.5},
        {"name": "lsd", "eta": 1.5},  # the old name is checked as the new one
        {"name": "lsd", "eta": 0.5, "diagonal_fraction": 0.5},  # not both
        {"name": "lmd", "diagonal_fraction": -0.1, "teacher": teacher},
        {"name": "lmd"},  # a distillation objective names its teacher
        {"name": "emd", "teacher": {"run": "a", "path": "b"}},
        {"name": "psd_midpoint", "derivative": "jvp"},
        {"name": "lsd", "derivative": "autograd"},
        {"name": "esd", "max_gap": 0.0},
        {"name": "lsd", "max_gap_anneal": 0.5},  # annealing needs a cap to start from
        {"name": "lsd", "max_gap": 0.1, "max_gap_anneal": 0.0},
    ):
        with pytest.raises(pydantic.ValidationError):
            adapter.validate_python(bad)


def test_the_old_name_eta_loads_as_diagonal_fraction_and_is_dumped_under_the_new_one():
    adapter = pydantic.TypeAdapter(ObjectiveConfig)
    config = adapter.validate_python({"name": "lsd", "eta": 0.75})
    assert config.diagonal_fraction == 0.75 and config.model_dump()["diagonal_fraction"] == 0.75
    assert "eta" not in config.model_dump()
    assert make_config("psd_midpoint").diagonal_fraction == 0.25


def test_diagonal_fraction_counts_the_samples_on_the_diagonal(interpolant):
    """round(diagonal_fraction B) samples regress u(t, t, .); the rest pay the off-diagonal residual."""
    model = TwoTimeMLP(2, hidden=16, depth=2, embedding_dim=8)
    objective = build_objective(make_config("lsd", diagonal_fraction=0.75), interpolant)
    seen = []
    original = objective.offdiagonal_residual
    objective.offdiagonal_residual = lambda m, s, t, xs, g: seen.append(s.shape[0]) or original(m, s, t, xs, g)
    objective(model, data(100), torch.Generator().manual_seed(0))
    assert seen == [25]


@pytest.mark.parametrize("name", ["lmd", "emd"])
def test_distillation_objectives_sample_without_a_teacher_but_refuse_to_train(interpolant, name):
    objective = build_objective(make_config(name), interpolant)
    assert objective.sample(ExactFlowMap(), torch.zeros(4, 2), 2).nfe == 2
    with pytest.raises(ValueError, match="teacher"):
        objective(ExactFlowMap(), data(8), torch.Generator().manual_seed(0))
