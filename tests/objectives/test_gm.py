"""Generator matching (spec section 6): the conditional jump kernel against the forward equation, the discretised
jump law, the Bregman loss at its minimiser, `gm_flow` against `si`, the network heads, and bad input (exit 2)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from mgm_studies.builders import build_model
from mgm_studies.cli import main
from mgm_studies.config import parse_run_config
from mgm_studies.interpolants import Interpolant
from mgm_studies.models import MLPConfig, UNetConfig
from mgm_studies.objectives import OBJECTIVES, VelocityHeads, build_objective
from mgm_studies.objectives.gm import GMFlowConfig, GMJumpConfig, GMSuperpositionConfig
from mgm_studies.objectives.gm_path import JumpBins, _phi, _primitive, _roots, conditional_rate, standardise
from mgm_studies.objectives.si import SIConfig
from mgm_studies.objectives.time_laws import TimeLawConfig

ROOT = Path(__file__).resolve().parents[2]
CASES = [(0.0, 0.0), (0.3, 1.5), (0.6, -2.5), (0.9, 0.7), (0.99, 3.0)]  # (t, z)


def conditional_density(x, z, t):
    """p_t(x | z) = N(x; t z, (1 - t)^2), per dimension."""
    return _phi(standardise(x, z, t)) / (1 - t)


def conditional_velocity(x, z, t):
    """The flow part: (z - x) / (1 - t), which equals x1 - x0 on the path x = (1 - t) x0 + t z."""
    return (z - x) / (1 - t)


def jump_density(y, z, t):
    """J_t(y | z): [-k_t(y)]_+ N(y; t z, (1 - t)^2), normalised over y (a density in y's units)."""
    u = standardise(y, z, t)
    low, high = _roots(z)
    return (1 + z * u - u.square()).clamp(min=0) * _phi(u) / ((_primitive(high, z) - _primitive(low, z)) * (1 - t))


def _spec_k(x, z, t):
    """k_t(x) = x^2 - (1 + t) x z - (1 - t)^2 + t z^2, written as in the spec."""
    return x.square() - (1 + t) * x * z - (1 - t) ** 2 + t * z.square()


@pytest.mark.parametrize(("t", "z"), CASES)
def test_the_conditional_jump_kernel_satisfies_the_forward_equation(t, z):
    """d/dt p_t(x|z) = (integral of lambda_t(y|z) p_t(y|z) dy) J_t(x|z) - lambda_t(x|z) p_t(x|z), on a grid."""
    t, z = torch.tensor(t, dtype=torch.float64), torch.tensor(z, dtype=torch.float64)
    # The grid follows the conditional law: 12 standard deviations either side, 480k cells.
    x = t * z + (1 - t) * torch.linspace(-12, 12, 480_001, dtype=torch.float64)
    h = 1e-5 * (1 - t)
    d_dt = (conditional_density(x, z, t + h) - conditional_density(x, z, t - h)) / (2 * h)
    outflow = conditional_rate(x, z, t) * conditional_density(x, z, t)
    total_outflow = torch.trapezoid(outflow, x)
    generator_action = total_outflow * jump_density(x, z, t) - outflow
    error = (d_dt - generator_action).abs().max() / d_dt.abs().max()
    assert error < 1e-6, error.item()
    # Not a vacuous identity: a jump law off by a factor breaks it by far more than the tolerance.
    wrong = 1.01 * total_outflow * jump_density(x, z, t) - outflow
    assert (d_dt - wrong).abs().max() / d_dt.abs().max() > 1e-3


@pytest.mark.parametrize(("t", "z"), CASES)
def test_rate_jump_law_and_velocity_are_the_spec_formulas(t, z):
    t, z = torch.tensor(t, dtype=torch.float64), torch.tensor(z, dtype=torch.float64)
    x = t * z + (1 - t) * torch.linspace(-6, 6, 20_001, dtype=torch.float64)
    k = _spec_k(x, z, t)
    torch.testing.assert_close(conditional_rate(x, z, t), k.clamp(min=0) / (1 - t) ** 3)
    unnormalised = (-k).clamp(min=0) * conditional_density(x, z, t)
    density = jump_density(x, z, t)
    assert abs(torch.trapezoid(density, x).item() - 1) < 1e-6
    torch.testing.assert_close(density, unnormalised / torch.trapezoid(unnormalised, x), rtol=1e-6, atol=1e-9)
    x0 = torch.randn(5, dtype=torch.float64)
    xt = (1 - t) * x0 + t * z
    torch.testing.assert_close(conditional_velocity(xt, z, t), z - x0)


@pytest.mark.parametrize(("t", "z"), CASES)
def test_bin_masses_are_the_integrals_of_the_jump_law_with_the_tails_in_the_end_bins(t, z):
    bins = JumpBins(-2.0, 3.0, 10)
    t, z = torch.tensor(t, dtype=torch.float64), torch.tensor(z, dtype=torch.float64)
    masses = bins.masses(z.view(1, 1), t.view(1, 1))[0, :, 0]
    assert masses.shape == (10,) and (masses >= 0).all()
    assert abs(masses.sum().item() - 1) < 1e-12
    # The law lives within a few conditional standard deviations: 10 of them either side stand in for infinity.
    support = ((t * z - 10 * (1 - t)).item(), (t * z + 10 * (1 - t)).item())
    edges = bins.edges(torch.float64).tolist()
    edges[0], edges[-1] = min(support[0], edges[0]), max(support[1], edges[-1])  # the tails go to the end bins
    for i, (a, b) in enumerate(itertools.pairwise(edges)):
        a, b = max(a, support[0]), min(b, support[1])
        y = torch.linspace(a, b, 200_001, dtype=torch.float64) if a < b else torch.zeros(2, dtype=torch.float64)
        assert abs(torch.trapezoid(jump_density(y, z, t), y).item() - masses[i].item()) < 1e-8, i


def test_sampled_jumps_follow_the_bin_law_uniformly_inside_each_bin():
    bins = JumpBins(-1.0, 1.0, 4)
    probabilities = torch.tensor([0.1, 0.4, 0.0, 0.5])
    logits = probabilities.log().view(1, 4, 1).expand(200_000, 4, 1)
    values = bins.sample(logits, torch.Generator().manual_seed(0))[:, 0]
    assert values.shape == (200_000,) and values.min() >= -1 and values.max() <= 1
    frequencies = torch.histc(values, bins=4, min=-1, max=1) / values.numel()
    torch.testing.assert_close(frequencies, probabilities, atol=4e-3, rtol=0)
    within = torch.histc(values[values > 0.5], bins=5, min=0.5, max=1.0) / (values > 0.5).sum()
    torch.testing.assert_close(within, torch.full((5,), 0.2), atol=6e-3, rtol=0)


class _ExactGenerator(nn.Module):
    """Heads of the exact generator of a one-point data law at z: with a single data point the marginal generator is
    the conditional one, so a Bregman loss must be pointwise smallest there. `rate_scale`, `law_shift` perturb it."""

    def __init__(self, objective, z: float, rate_scale: float = 1.0, law_shift: float = 0.0) -> None:
        super().__init__()
        self.objective, self.z, self.rate_scale, self.law_shift = objective, z, rate_scale, law_shift

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t_ = t.view(-1, 1).double()
        z = torch.full_like(x, self.z).double()
        rate = conditional_rate(x.double(), z, t_) * self.rate_scale
        raw_rate = torch.where(rate > 0, torch.log(torch.expm1(rate)), torch.full_like(rate, -1e4))  # softplus^-1
        masses = self.objective.bins.masses(z, t_)
        logits = masses.clamp_min(1e-300).log() + self.law_shift * torch.linspace(-1, 1, masses.shape[1]).view(1, -1, 1)
        velocity = conditional_velocity(x.double(), z, t_)
        parts = ([velocity.unsqueeze(1)] if self.objective.has_flow else []) + [raw_rate.unsqueeze(1), logits]
        return torch.cat(parts, dim=1).flatten(1)


@pytest.mark.parametrize("name", ["gm_jump", "gm_superposition"])
def test_the_loss_is_pointwise_smallest_at_the_exact_generator_of_a_one_point_law(name):
    objective = build_objective(OBJECTIVES[name].config(bins=16, value_range=(-3.0, 3.0)), Interpolant())
    x1 = torch.full((512, 2), 1.3, dtype=torch.float64)

    def loss(**perturbation):
        return objective(_ExactGenerator(objective, 1.3, **perturbation), x1, torch.Generator().manual_seed(0))

    exact = loss()
    assert exact.loss.shape == (512,) and torch.isfinite(exact.loss).all()
    assert set(exact.diagnostics) >= {"gm/rate_loss", "gm/jump_law_loss"}
    for perturbation in ({"rate_scale": 1.2}, {"rate_scale": 0.8}, {"law_shift": 0.3}):
        worse = loss(**perturbation).loss
        assert (worse >= exact.loss - 1e-9).all() and (worse - exact.loss).mean() > 1e-4, perturbation


def test_gm_flow_is_si_on_the_linear_interpolant_on_the_same_batch():
    torch.manual_seed(0)
    interpolant = Interpolant("linear", "none")
    law = TimeLawConfig(t_eps=0.02)  # t <= 0.98 < t_max: the clamp is idle, as si has none
    gm_flow = build_objective(GMFlowConfig(time_law=law), interpolant)
    si = build_objective(SIConfig(time_law=law), interpolant)
    assert gm_flow.model_kind == si.model_kind == "velocity"
    model = build_model(MLPConfig(hidden=32, depth=2, embedding_dim=8), 2, gm_flow.model_kind)
    x1 = torch.randn(256, 2)
    ours = gm_flow(model, x1, torch.Generator().manual_seed(7))
    theirs = si(model, x1, torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=1e-6, atol=0)
    # ... and a different draw gives a different loss: the comparison is not vacuous.
    assert not torch.allclose(ours.loss, si(model, x1, torch.Generator().manual_seed(8)).loss)


def test_the_network_has_one_head_per_output_sized_by_the_config():
    interpolant = Interpolant()
    jump = build_objective(GMJumpConfig(bins=8), interpolant)
    both = build_objective(GMSuperpositionConfig(bins=8), interpolant)
    assert jump.model_kind == VelocityHeads(9) and both.model_kind == VelocityHeads(10)
    mlp = build_model(MLPConfig(hidden=16, depth=2, embedding_dim=8), 3, both.model_kind)
    heads = both.split(mlp(torch.rand(5), torch.randn(5, 3)))
    assert heads.velocity.shape == heads.rate.shape == (5, 3) and heads.logits.shape == (5, 8, 3)
    assert (heads.rate >= 0).all()
    unet_config = UNetConfig(name="unet", channels=8, norm_groups=4, embedding_dim=16)
    unet = build_model(unet_config, (1, 8, 8), jump.model_kind)
    heads = jump.split(unet(torch.rand(2), torch.randn(2, 1, 8, 8)))
    assert heads.velocity is None and heads.rate.shape == (2, 1, 8, 8) and heads.logits.shape == (2, 8, 1, 8, 8)
    # One head is today's network: same parameters, same output shape.
    plain, one_head = (build_model(unet_config, (1, 8, 8), kind) for kind in ("velocity", VelocityHeads(1)))
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in one_head.state_dict().items()}


def test_image_data_defaults_the_jump_range_to_pixel_values():
    train = {"steps": 1}
    image = parse_run_config({"data": {"name": "digits"}, "objective": {"name": "gm_jump"}, "train": train})
    vector = parse_run_config({"data": {"name": "moons"}, "objective": {"name": "gm_jump"}, "train": train})
    assert image.objective.value_range == (-1.0, 1.0) and vector.objective.value_range == (-5.0, 5.0)


BAD = [
    ({"objective": {"name": "gm_jump", "bins": 1}}, "objective.bins"),
    ({"objective": {"name": "gm_superposition", "bins": 0}}, "objective.bins"),
    ({"objective": {"name": "gm_jump", "t_max": 1.0}}, "objective.t_max"),
    ({"objective": {"name": "gm_flow", "t_max": 1.5}}, "objective.t_max"),
    ({"objective": {"name": "gm_superposition", "sampler": {"superposition_weight": 1.5}}}, "superposition_weight"),
    ({"objective": {"name": "gm_superposition", "sampler": {"superposition_weight": -0.1}}}, "superposition_weight"),
    ({"objective": {"name": "gm_jump", "sampler": {"name": "heun"}}}, "objective.sampler.name"),
    ({"objective": {"name": "gm_jump", "sampler": {"jump_step": "poisson"}}}, "objective.sampler.jump_step"),
    ({"objective": {"name": "gm_superposition", "sampler": {"jump_step": "kappa"}}}, "objective.sampler.jump_step"),
    ({"objective": {"name": "gm_jump", "value_range": [2.0, -2.0]}}, "objective.value_range"),
    ({"objective": {"name": "gm_flow"}, "interpolant": {"schedule": "trig"}}, "interpolant.schedule"),
    ({"objective": {"name": "gm_jump"}, "interpolant": {"gamma": "sin2"}}, "interpolant.gamma"),
    ({"objective": {"name": "gm_superposition"}, "interpolant": {"sigma0": 2.0}}, "interpolant.sigma0"),
]


@pytest.mark.parametrize(("section", "field"), BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_bad_input_exits_2_naming_the_field(section, field, tmp_path, capsys):
    config = {"data": {"name": "checkerboard"}, "train": {"steps": 1}, **section}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", str(path)]) == 2
    assert field in capsys.readouterr().err
    good = {**config, "objective": {"name": config["objective"]["name"]}, "interpolant": {}}
    path.write_text(yaml.safe_dump(good))
    assert main(["validate", str(path)]) == 0


def test_the_shipped_space_validates_and_the_gm_axes_are_sweepable(tmp_path, capsys):
    assert main(["validate", str(ROOT / "search_spaces" / "gm_superposition.yaml")]) == 0
    assert "valid search space 'gm_superposition'" in capsys.readouterr().out
    space = {
        "name": "gm_axes",
        "base": {
            "data": {"name": "checkerboard"},
            "objective": {"name": "gm_superposition"},
            "train": {"steps": 10},
            "eval": {"steps": [8]},
        },
        "metric": "kl/nfe-8",
        "search": {"algorithm": "grid"},
        "space": {
            "objective.bins": {"grid": [16, 64]},
            "objective.sampler.superposition_weight": {"grid": [0.0, 0.5, 1.0]},
            "objective.sampler.name": {"grid": ["euler", "heun"]},
            "objective.sampler.jump_step": {"grid": ["exponential", "bernoulli", "scheduler"]},
            "eval.steps": {"grid": [[8], [8, 64]]},
        },
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    assert main(["validate", str(tmp_path / "space.yaml")]) == 0
    space["space"]["objective.sampler.superposition_weight"] = {"uniform": [0.0, 1.5]}
    space["search"]["algorithm"] = "optuna"
    space["space"] = {k: {"choice": v["grid"]} if "grid" in v else v for k, v in space["space"].items()}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    assert main(["validate", str(tmp_path / "space.yaml")]) == 2
    assert "space.objective.sampler.superposition_weight" in capsys.readouterr().err
