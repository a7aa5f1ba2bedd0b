"""MGM (spec section 5): the midpoint divergence's closed form, the critic that estimates it, the flip ablation, the
gradients of both phases, the phase schedule, and what the config and the objective refuse."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from mgm_studies.config import parse_run_config
from mgm_studies.configbase import ConfigError
from mgm_studies.interpolants import Interpolant
from mgm_studies.models import GeneratorMLP
from mgm_studies.models.critic import FourierFeatureCritic
from mgm_studies.objectives import OBJECTIVES, build_objective
from mgm_studies.objectives.mgm import MGMConfig, MidpointGenerativeModel

MIDPOINT = {"t_min": 0.5, "t_max": 0.5}


class AffineGenerator(nn.Module):
    """A fixed 'generator' z -> m0 + s0 z: its law is q = N(m0, s0^2) for z ~ N(0, 1). No parameters."""

    def __init__(self, mean: float, sd: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("sd", torch.tensor(sd))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean + self.sd * z


class AffineCritic(nn.Module):
    """f(t, y) = intercept + slope y (1-D), with trainable parameters: the exact E[D | Y] at the midpoint."""

    def __init__(self, intercept: float, slope: float) -> None:
        super().__init__()
        self.intercept = nn.Parameter(torch.tensor(intercept))
        self.slope = nn.Parameter(torch.tensor(slope))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.intercept + self.slope * y


def midpoint_divergence(m1: float, s1: float, m0: float, s0: float) -> float:
    """Spec section 5: MD(N(m1, s1^2), N(m0, s0^2)) = (m1 - m0)^2 + (s1^2 - s0^2)^2 / (s1^2 + s0^2)."""
    return (m1 - m0) ** 2 + (s1**2 - s0**2) ** 2 / (s1**2 + s0**2)


def exact_midpoint_critic(m1: float, s1: float, m0: float, s0: float) -> AffineCritic:
    """E[D | Y] for Y = (x_g + x_d) / 2, D = x_d - x_g (jointly Gaussian): (m1 - m0) + Cov(D, Y) / Var Y (Y - E Y)."""
    slope = 2 * (s1**2 - s0**2) / (s1**2 + s0**2)
    return AffineCritic((m1 - m0) - slope * (m1 + m0) / 2, slope)


def make_objective(interpolant: Interpolant | None = None, **config) -> MidpointGenerativeModel:
    options = {"critic_hidden": 64, "critic_depth": 2} | config
    return MidpointGenerativeModel(MGMConfig(**options), interpolant or Interpolant("linear"))


def train_critic(objective: MidpointGenerativeModel, data: tuple[float, float], gen: nn.Module, steps: int) -> float:
    """Critic phase only, against a fixed generator; returns the estimate E ||f(Y, t)||^2 on a fresh batch."""
    threads = torch.get_num_threads()
    # A tiny network: one thread is fastest, and it stays fast when other processes share the CPU.
    torch.set_num_threads(1)
    try:
        return _train_critic(objective, data, gen, steps)
    finally:
        torch.set_num_threads(threads)


def _train_critic(objective: MidpointGenerativeModel, data: tuple[float, float], gen: nn.Module, steps: int) -> float:
    torch.manual_seed(0)
    objective.attach(gen, 1)
    critic = objective.networks()["critic"]
    optimizer = torch.optim.Adam(critic.parameters(), lr=2e-3, betas=objective.optimizer_options("critic")["betas"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(1)
    mean, sd = data
    for _ in range(steps):
        x1 = mean + sd * torch.randn(256, 1, generator=generator)
        loss = objective.loss("critic", gen, x1, generator).loss.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        x1 = mean + sd * torch.randn(200_000, 1, generator=generator)
        return objective.loss("critic", gen, x1, generator).diagnostics["mgm/divergence"].item()


# ---------------------------------------------------------------------- closed form
@pytest.mark.parametrize(("m1", "s1", "m0", "s0"), [(1.0, 1.0, 0.0, 1.0), (0.0, 2.0, 0.0, 1.0), (0.5, 1.5, -0.5, 0.5)])
def test_closed_form_matches_a_brute_force_regression_of_d_on_the_midpoint(m1, s1, m0, s0):
    # (D, Y) are jointly Gaussian, so E[D | Y] is the least-squares line of D on (1, Y): fit it on a large draw of
    # the objective's own observation and average its square.
    objective = make_objective(**MIDPOINT)
    generator = torch.Generator().manual_seed(0)
    n = 1_000_000
    x_data = m1 + s1 * torch.randn(n, 1, generator=generator, dtype=torch.float64)
    x_gen = m0 + s0 * torch.randn(n, 1, generator=generator, dtype=torch.float64)
    draw = objective.observe(x_data, x_gen, generator)
    design = torch.cat([torch.ones_like(draw.y), draw.y], dim=1)
    coefficients = torch.linalg.lstsq(design, draw.displacement).solution
    brute_force = (design @ coefficients).square().mean().item()
    assert brute_force == pytest.approx(midpoint_divergence(m1, s1, m0, s0), rel=0.01)


@pytest.mark.parametrize(("flip_probability", "t_seen"), [(0.0, 0.2), (1.0, 0.8)])
def test_observation_weights_generator_at_t_prime_and_data_at_one_minus_it(flip_probability, t_seen):
    # Linear: Y = (1 - t') x_g + t' x_d (x_g at the noise end t = 0), t' = t unflipped and 1 - t flipped; the critic is
    # given t, never t'. The noise is the interpolant's gamma: `sqrt` with scale a has variance a t' (1 - t').
    interpolant = Interpolant("linear", "sqrt", gamma_scale=0.5)
    objective = make_objective(interpolant, flip_probability=flip_probability, t_min=0.2, t_max=0.2)
    generator = torch.Generator().manual_seed(0)
    x_data, x_gen = torch.full((200_000, 2), 3.0), torch.full((200_000, 2), -1.0)
    draw = objective.observe(x_data, x_gen, generator)
    assert torch.allclose(draw.t, torch.full((200_000,), 0.2))
    assert torch.equal(draw.displacement, x_data - x_gen)
    assert draw.y.mean().item() == pytest.approx((1 - t_seen) * -1.0 + t_seen * 3.0, abs=0.01)
    assert draw.y.var().item() == pytest.approx(0.5 * 0.2 * 0.8, rel=0.02)


@pytest.mark.parametrize(("m1", "s1", "m0", "s0"), [(1.0, 1.0, 0.0, 1.0), (0.0, 2.0, 0.0, 1.0), (0.5, 1.5, -0.5, 0.5)])
def test_a_trained_critic_estimates_the_midpoint_divergence_within_5_percent(m1, s1, m0, s0):
    # Measured (seed 0, 800 steps): the plug-in E ||f||^2 is within 0.9 %, 0.5 %, 1.3 % of the closed form, and the
    # held-out lower bound E[2 <f, D> - ||f||^2] (which the collapse check uses) within 0.2 %.
    objective, generator = make_objective(**MIDPOINT), AffineGenerator(m0, s0)
    estimate = train_critic(objective, (m1, s1), generator, steps=800)
    exact = midpoint_divergence(m1, s1, m0, s0)
    assert estimate == pytest.approx(exact, rel=0.05)
    draws = torch.Generator().manual_seed(7)
    with torch.no_grad():
        x_data = m1 + s1 * torch.randn(200_000, 1, generator=draws)
        draw = objective.observe(x_data, generator(torch.randn(200_000, 1, generator=draws)), draws)
        f = objective.critic(draw.t, draw.y)
        bound = (2 * f * draw.displacement - f.square()).mean().item()
    assert bound == pytest.approx(exact, rel=0.05)


def test_the_exact_critic_makes_the_generator_loss_the_divergence_and_the_critic_loss_its_complement():
    # At f = E[D | Y]: E[2 <f, D> - ||f||^2] = E ||f||^2 = MD, and E ||f - D||^2 = E ||D||^2 - MD.
    m1, s1, m0, s0 = 0.5, 1.5, -0.5, 0.5
    objective = make_objective(**MIDPOINT)
    gen = AffineGenerator(m0, s0)
    objective.attach(gen, 1)
    objective.critic = exact_midpoint_critic(m1, s1, m0, s0)
    generator = torch.Generator().manual_seed(0)
    x1 = m1 + s1 * torch.randn(400_000, 1, generator=generator)
    expected = midpoint_divergence(m1, s1, m0, s0)
    generator_loss = objective.loss("model", gen, x1, generator).loss.mean().item()
    critic_loss = objective.loss("critic", gen, x1, generator).loss.mean().item()
    second_moment = (m1 - m0) ** 2 + s1**2 + s0**2
    assert generator_loss == pytest.approx(expected, rel=0.02)
    assert critic_loss == pytest.approx(second_moment - expected, rel=0.02)


# ---------------------------------------------------------------------- flip probability
def exact_flip_divergence(flip_probability: float, t_min: float, t_max: float, sd: float) -> float:
    """p = q = N(m, sd^2), linear, t ~ U[t_min, t_max]: E ||E[D | Y, t]||^2.

    Swapping x_d and x_g leaves (x_d, x_g) in law and turns the unflipped observation into the flipped one while D
    changes sign, so E[D | Y, t] = (1 - 2 p_flip) E[D | Y, t, unflipped] = (1 - 2 p_flip) c(t) (Y - m) with
    c(t) = Cov(D, Y) / Var Y = (2t - 1) / ((1 - t)^2 + t^2), and E (Y - m)^2 = ((1 - t)^2 + t^2) sd^2.
    """
    t = t_min + (t_max - t_min) * (torch.arange(10_000, dtype=torch.float64) + 0.5) / 10_000
    per_time = (2 * t - 1).square() / ((1 - t).square() + t.square()) * sd**2
    return (1 - 2 * flip_probability) ** 2 * per_time.mean().item()


def test_equal_laws_give_zero_only_with_a_fair_flip():
    # Off the midpoint (t in [0.1, 0.3]) the unflipped branch alone does see D: Y = (1 - t) x_g + t x_d leans towards
    # x_g, so E[D | Y, unflipped] = c(t) (Y - m) != 0 even for p = q. Only p_flip = 1/2 cancels it exactly; at the
    # midpoint alone c(1/2) = 0, and any p_flip would give zero, which would test nothing.
    times = {"t_min": 0.1, "t_max": 0.3}
    fair = train_critic(make_objective(flip_probability=0.5, **times), (0.0, 1.0), AffineGenerator(0.0, 1.0), 800)
    biased = train_critic(make_objective(flip_probability=0.2, **times), (0.0, 1.0), AffineGenerator(0.0, 1.0), 800)
    expected_biased = exact_flip_divergence(0.2, 0.1, 0.3, 1.0)  # about 0.19
    assert exact_flip_divergence(0.5, 0.1, 0.3, 1.0) == 0.0
    assert fair < 0.01
    assert biased == pytest.approx(expected_biased, rel=0.1)


# ---------------------------------------------------------------------- both phases: shapes and gradients
def _grads(module: nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


@pytest.mark.parametrize("gen_grad", ["full", "stopped"])
@pytest.mark.parametrize("schedule", ["linear", "trig"])
def test_each_phase_sends_gradients_only_to_its_own_network(gen_grad, schedule):
    torch.manual_seed(0)
    objective = make_objective(Interpolant(schedule, "sqrt", gamma_scale=0.5), gen_grad=gen_grad)
    model = GeneratorMLP(2, hidden=16, depth=2)
    objective.attach(model, 2)
    critic = objective.networks()["critic"]
    generator = torch.Generator().manual_seed(0)
    x1 = torch.randn(32, 2, generator=generator)

    out = objective.loss("critic", model, x1, generator)
    assert out.loss.shape == (32,) and torch.isfinite(out.loss).all()
    assert out.diagnostics["mgm/divergence"].dim() == 0 and not out.diagnostics["mgm/divergence"].requires_grad
    out.loss.mean().backward()
    assert all(g is None for g in _grads(model))
    assert all(g is not None and torch.isfinite(g).all() for g in _grads(critic))
    assert any(g.abs().sum() > 0 for g in _grads(critic))

    critic.zero_grad(set_to_none=True)
    out = objective.loss("model", model, x1, generator)
    assert out.loss.shape == (32,) and torch.isfinite(out.loss).all()
    assert "mgm/divergence" in out.diagnostics
    out.loss.mean().backward()
    assert all(g is None for g in _grads(critic))
    assert all(p.requires_grad for p in critic.parameters())  # the critic is frozen for the step, not for good
    assert all(g is not None and torch.isfinite(g).all() for g in _grads(model))
    assert any(g.abs().sum() > 0 for g in _grads(model))


def test_stopped_and_full_generator_gradients_differ_by_the_term_through_y():
    # full differentiates 2 <f(Y), D> - ||f(Y)||^2 through D and Y; stopped keeps only the D term, -2 <G(z), sg[f]>.
    # With a critic constant in y, the Y term vanishes and both give the same generator gradient; with a critic that
    # depends on y, they differ.
    gradients = {}
    for slope in (0.0, 0.7):
        for gen_grad in ("full", "stopped"):
            objective = make_objective(gen_grad=gen_grad, **MIDPOINT)
            torch.manual_seed(0)
            model = GeneratorMLP(1, hidden=8, depth=1)
            objective.attach(model, 1)
            objective.critic = AffineCritic(0.3, slope)
            x1 = torch.randn(64, 1, generator=torch.Generator().manual_seed(1))
            objective.loss("model", model, x1, torch.Generator().manual_seed(2)).loss.mean().backward()
            gradients[slope, gen_grad] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.allclose(gradients[0.0, "full"], gradients[0.0, "stopped"], atol=1e-6)
    assert not torch.allclose(gradients[0.7, "full"], gradients[0.7, "stopped"], atol=1e-3)


# ---------------------------------------------------------------------- hooks, sampling, registry
def test_phases_honour_warmup_and_critic_steps():
    objective = make_objective(warmup_steps=3, critic_steps=2)
    assert [objective.phases(step) for step in range(3)] == [("critic",)] * 3
    assert objective.phases(3) == objective.phases(10) == ("critic", "critic", "model")
    assert make_objective().phases(0) == ("critic", "model")


def test_optimizer_options_and_the_critic_network():
    objective = make_objective(critic_lr=3e-4)
    assert objective.optimizer_options("critic") == {"lr": 3e-4, "betas": (0.0, 0.99)}
    assert objective.optimizer_options("model") == {"betas": (0.0, 0.99)}
    assert make_objective(adam_betas=None).optimizer_options("model") == {}
    own = make_objective(critic_adam_betas=(0.5, 0.9))
    assert own.optimizer_options("critic") == {"betas": (0.5, 0.9)}
    assert own.optimizer_options("model") == {"betas": (0.0, 0.99)}
    with pytest.raises(RuntimeError, match="attach"):
        objective.networks()
    objective.attach(GeneratorMLP(3, hidden=8, depth=1), 3)
    critic = objective.networks()["critic"]
    assert critic(torch.rand(5), torch.randn(5, 3)).shape == (5, 3)
    with pytest.raises(ValueError, match="phase"):
        objective.loss("teacher", GeneratorMLP(3), torch.randn(4, 3), torch.Generator())


def test_time_law_stays_in_range_and_rho_moves_mass_towards_t_min():
    generator = torch.Generator().manual_seed(0)
    uniform = make_objective(t_min=0.1, t_max=0.4).sample_times(100_000, generator, torch.device("cpu"))
    skewed = make_objective(t_min=0.1, t_max=0.4, rho=3.0).sample_times(100_000, generator, torch.device("cpu"))
    for t in (uniform, skewed):
        assert t.min() >= 0.1 - 1e-6 and t.max() <= 0.4 + 1e-6
    assert uniform.mean().item() == pytest.approx(0.25, abs=0.005)
    assert skewed.mean() < uniform.mean() - 0.02


def test_sampling_is_one_step_whatever_the_number_of_steps():
    torch.manual_seed(0)
    objective = make_objective()
    model = GeneratorMLP(2, hidden=16, depth=2)
    x0 = torch.randn(10, 2)
    one, four = objective.sample(model, x0, 1), objective.sample(model, x0, 4)
    assert one.nfe == four.nfe == 1
    assert torch.equal(one.x, four.x) and torch.allclose(one.x, model(x0))


def test_registry_builds_mgm_for_a_generator():
    config_class, objective_class = OBJECTIVES["mgm"].config, OBJECTIVES["mgm"].objective
    objective = build_objective(config_class(), Interpolant("trig"))
    assert isinstance(objective, objective_class) and objective.model_kind == "generator"


@pytest.mark.parametrize("interpolant", [Interpolant("vp"), Interpolant("poly", poly_power=2.0)])
def test_a_non_symmetric_interpolant_is_refused(interpolant):
    with pytest.raises(ValueError, match="symmetric"):
        MidpointGenerativeModel(MGMConfig(), interpolant)


@pytest.mark.parametrize(
    "bad",
    [
        {"flip_probability": -0.1},
        {"flip_probability": 1.1},
        {"t_min": 0.4, "t_max": 0.3},
        {"t_max": 0.6},
        {"t_min": 0.0},
        {"rho": 0.0},
        {"sigma_max": -1.0},
        {"sigma_max": 0.5},  # the noise is the interpolant's gamma now
        {"critic_steps": 0},
        {"warmup_steps": -1},
        {"gen_grad": "half"},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValidationError):
        MGMConfig(**bad)


def test_generator_mlp_shapes_and_sizes():
    assert GeneratorMLP(3, hidden=8, depth=2)(torch.randn(4, 3)).shape == (4, 3)
    for bad in ({"dim": 0}, {"dim": 2, "hidden": 0}, {"dim": 2, "depth": 0}, {"dim": 2, "activation": "tanh"}):
        with pytest.raises(ValueError):
            GeneratorMLP(**bad)


@pytest.mark.parametrize(
    ("gamma", "scale", "variance"),
    [("sqrt", 0.3, lambda t: 0.3 * t * (1 - t)), ("sin2", 0.4, lambda t: (0.4 * math.sin(math.pi * t) ** 2) ** 2)],
)
@pytest.mark.parametrize("flip_probability", [0.0, 0.5, 1.0])
def test_the_observation_noise_is_the_interpolants_gamma_whatever_the_flip(gamma, scale, variance, flip_probability):
    # With x_d = x_g = 0, Y = gamma(t') eps; a symmetric gamma gives the same variance for t' = t and t' = 1 - t.
    interpolant = Interpolant("linear", gamma, gamma_scale=scale)
    objective = make_objective(interpolant, flip_probability=flip_probability, t_min=0.3, t_max=0.3)
    zeros = torch.zeros(200_000, 1)
    draw = objective.observe(zeros, zeros, torch.Generator().manual_seed(1))
    assert draw.y.var().item() == pytest.approx(variance(0.3), rel=0.02)
    none = make_objective(Interpolant("linear"), flip_probability=flip_probability, t_min=0.3, t_max=0.3)
    assert none.observe(zeros[:10], zeros[:10], torch.Generator().manual_seed(1)).y.abs().max().item() == 0.0


def test_a_config_with_sigma_max_says_what_to_write_instead():
    config = {"data": {"name": "moons"}, "train": {"steps": 1}, "objective": {"name": "mgm", "sigma_max": 0.5}}
    with pytest.raises(ConfigError) as caught:
        parse_run_config(config)
    field, message = caught.value.problems[0]
    assert field == "objective.sigma_max" and "interpolant: {gamma: sqrt, gamma_scale: 0.5}" in message
    config["objective"]["sigma_max"] = 0.0  # old configs that wrote the default keep validating
    assert parse_run_config(config).objective.sigma_max == 0.0


# ---------------------------------------------------------------------- the denoising warm-up and initialisation
def _warm(interpolant: Interpolant | None = None, **config) -> tuple[MidpointGenerativeModel, nn.Module]:
    from mgm_studies.builders import build_model
    from mgm_studies.models import MLPConfig

    objective = make_objective(interpolant, denoiser_steps=10, **config)
    model = build_model(MLPConfig(hidden=32, depth=2, embedding_dim=8), (2,), objective.model_kind)
    objective.attach(model, 2)
    return objective, model


@pytest.mark.parametrize(("schedule", "time"), [("linear", 0.0), ("linear", 0.3), ("trig", 0.0), ("trig", 0.4)])
def test_the_warmed_generator_is_the_denoisers_data_prediction(schedule, time):
    # G(z) = x1 solved from x = alpha x0 + beta x1 and v = alpha' x0 + beta' x1 at t_g: on the linear path at t_g = 0,
    # G(z) = z + v(0, z). Checked against the formula written out with the interpolant's own coefficients.
    torch.manual_seed(0)
    interpolant = Interpolant(schedule)
    _, model = _warm(interpolant, generator_time=time)
    z = torch.randn(64, 2)
    t = torch.full((64,), time)
    v = model.velocity(t, z)
    a, b, da, db = (
        c(t)[:, None] for c in (interpolant.alpha, interpolant.beta, interpolant.alpha_dot, interpolant.beta_dot)
    )
    expected = (da * z - a * v) / (da * b - a * db)
    assert torch.allclose(model(z), expected, atol=1e-5)
    if schedule == "linear" and time == 0.0:
        assert torch.allclose(model(z), z + v, atol=1e-6)
    # The data prediction inverts the path: an x_t built from (x0, x1) with the exact velocity gives back x1.
    x0, x1 = torch.randn(64, 2), torch.randn(64, 2)
    xt, exact_v = a * x0 + b * x1, da * x0 + db * x1
    assert torch.allclose((da * xt - a * exact_v) / (da * b - a * db), x1, atol=1e-5)


def test_the_warm_up_trains_the_denoiser_with_the_si_loss_then_the_critic_starts_as_its_copy():
    torch.manual_seed(0)
    objective, model = _warm()
    assert [objective.phases(s) for s in (0, 9)] == [("denoise",), ("denoise",)]
    assert objective.phases(10) == ("critic", "model")
    assert set(objective.networks()) == {"critic", "denoise"} and objective.networks()["denoise"] is model.velocity
    x1 = torch.randn(32, 2)
    out = objective.loss("denoise", model, x1, torch.Generator().manual_seed(3))
    si = build_objective(OBJECTIVES["si"].config(), Interpolant("linear"))
    assert torch.equal(out.loss, si(model.velocity, x1, torch.Generator().manual_seed(3)).loss)
    with torch.no_grad():  # the warm-up moved the denoiser away from the critic's initial weights
        for parameter in model.velocity.parameters():
            parameter.add_(0.1)
    t, y = torch.rand(16), torch.randn(16, 2)
    objective.begin_step(9, 100)
    assert not torch.allclose(objective.critic(t, y), model.velocity(t, y))
    objective.begin_step(10, 100)  # the end of the warm-up: f(t, y) = v(t, y), the direction the denoiser points
    assert torch.equal(objective.critic(t, y), model.velocity(t, y))
    assert objective.optimizer_options("denoise") == {} and objective.optimizer_options("model")["betas"] == (0.0, 0.99)


def test_a_fourier_feature_critic_starts_as_its_base_and_as_the_denoisers_copy():
    torch.manual_seed(0)
    objective, model = _warm(critic_features=32, critic_feature_scale=2.0, critic_hidden=16)
    critic = objective.critic
    assert isinstance(critic, FourierFeatureCritic)
    t, y = torch.rand(16), torch.randn(16, 2)
    assert torch.equal(critic.branch(t, y), torch.zeros(16, 2))  # the branch's last layer starts at zero
    objective.begin_step(10, 100)
    assert torch.equal(critic(t, y), model.velocity(t, y))
    # The frequencies are a seeded draw, carried by the state dict: a rebuilt critic has the same ones.
    again, _ = _warm(critic_features=32, critic_feature_scale=2.0, critic_hidden=16)
    assert torch.equal(again.critic.branch.frequencies, critic.branch.frequencies)
    assert "branch.frequencies" in critic.state_dict()
    assert critic.branch.frequencies.std().item() == pytest.approx(2 * math.pi * 2.0, rel=0.25)
    # It learns: a critic step changes the branch (so the critic is no longer the denoiser).
    objective.critic.branch.trunk[-1].weight.data.normal_()
    assert not torch.equal(critic(t, y), model.velocity(t, y))


def test_fourier_features_for_images_are_refused_naming_the_field():
    config = {
        "data": {"name": "digits"},
        "model": {"name": "unet"},
        "objective": {"name": "mgm", "critic_features": 16},
        "train": {"steps": 10},
    }
    with pytest.raises(ConfigError) as caught:
        parse_run_config(config)
    assert "objective.critic_features" in [field for field, _ in caught.value.problems]


def test_a_warm_up_as_long_as_the_run_is_refused_naming_the_field():
    config = {"data": {"name": "moons"}, "train": {"steps": 100}, "objective": {"name": "mgm", "denoiser_steps": 100}}
    with pytest.raises(ConfigError) as caught:
        parse_run_config(config)
    assert caught.value.problems[0][0] == "objective.denoiser_steps"
