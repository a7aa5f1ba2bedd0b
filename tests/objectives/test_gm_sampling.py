"""Generator-matching samplers (spec section 6): the exact generator of a one-point law carried along the CondOT path
by Euler jumps (each jump step: 1 - exp(-h lambda), Bernoulli(h lambda), the jump scheduler), the superposition and the
mixed sampler; weights a = 1 and a = 0; the jump scheduler's closed form; the default unchanged; reproducible jump
noise; NFE; and the objectives trained by the shared Trainer on the checkerboard, scored by KL at 64 steps."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mgm_studies.builders import build_model
from mgm_studies.interpolants import Interpolant
from mgm_studies.models import MLPConfig
from mgm_studies.objectives import build_objective
from mgm_studies.objectives.gm import GMJumpConfig, GMSuperpositionConfig
from mgm_studies.objectives.gm_path import JumpBins, conditional_rate
from mgm_studies.objectives.gm_sampling import GeneratorHeads, jump_probability, superposition
from mgm_studies.runs import trainer_for
from mgm_studies.sampling import euler

Z = 1.5  # the one data point: the marginal generator is then the conditional one, and p_t = N(t Z, (1 - t)^2)
BINS = JumpBins(-6.0, 6.0, 240)


def exact_field(t: torch.Tensor, x: torch.Tensor) -> GeneratorHeads:
    """The exact heads at (t, x); the jump law depends on (t, Z) only, so it is computed once and broadcast."""
    t_, z = t.view(-1, 1), torch.full_like(x, Z)
    logits = BINS.masses(z[:1, :1], t_[:1]).clamp_min(1e-30).log().expand(x.shape[0], -1, x.shape[1])
    return GeneratorHeads((z - x) / (1 - t_), conditional_rate(x, z, t_), logits)  # the conditional velocity


@pytest.mark.parametrize(
    ("weight", "heun", "jump_step"),
    [
        (0.0, False, "exponential"),
        (0.5, False, "exponential"),
        (0.5, True, "exponential"),
        (0.0, False, "bernoulli"),
        (0.5, False, "bernoulli"),
        (0.0, False, "scheduler"),
        (0.5, False, "scheduler"),
    ],
    ids=[
        "jump",
        "superposition",
        "mixed",
        "jump-bernoulli",
        "superposition-bernoulli",
        "jump-scheduler",
        "superposition-scheduler",
    ],
)
def test_the_exact_generator_carries_noise_along_the_condot_path(weight, heun, jump_step):
    """Half-way (t = 1/2) the samples have the path's mean t Z and standard deviation 1 - t, whatever the weight and
    the jump step (all three agree to first order in h)."""
    x0 = torch.randn(10_000, 1, generator=torch.Generator().manual_seed(0))

    def half_way(field):
        generator = torch.Generator().manual_seed(1)
        return superposition(
            field, x0, 100, weight=weight, bins=BINS, generator=generator, heun=heun, t1=0.5, jump_step=jump_step
        )

    result = half_way(exact_field)
    assert result.nfe == (200 if heun else 100)
    mean, std = result.x.mean().item(), result.x.std().item()
    # Measured deviations <= 0.008 (standard error of the mean 0.005); a rate off by 25 % misses by 0.02-0.03.
    assert abs(mean - 0.5 * Z) < 0.015 and abs(std - 0.5) < 0.015, (mean, std)
    if weight == 0.0:  # not vacuous: twice the rate carries the samples elsewhere
        doubled = half_way(lambda t, x: (lambda h: GeneratorHeads(None, 2 * h.rate, h.logits))(exact_field(t, x)))
        assert abs(doubled.x.mean().item() - 0.5 * Z) > 0.03 and abs(doubled.x.std().item() - 0.5) > 0.03


def test_jumps_bring_every_sample_to_the_data_point_at_t_1():
    x0 = torch.randn(5000, 2, generator=torch.Generator().manual_seed(0))
    x = superposition(exact_field, x0, 64, weight=0.0, bins=BINS, generator=torch.Generator().manual_seed(1)).x
    assert ((x - Z).abs() <= 2 * BINS.width).float().mean() > 0.99


def test_weight_one_is_the_euler_flow_and_weight_zero_moves_only_by_jumps():
    x0 = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    flow = superposition(exact_field, x0, 16, weight=1.0, bins=BINS, generator=torch.Generator().manual_seed(1))
    velocity = euler(lambda t, x: exact_field(t, x).velocity, x0, 16)
    torch.testing.assert_close(flow.x, velocity.x)
    jump = superposition(exact_field, x0, 16, weight=0.0, bins=BINS, generator=torch.Generator().manual_seed(1))
    moved = jump.x != x0
    # An entry that moved jumped, so it sits inside the bins' range; some do not move in 16 steps.
    assert 0 < moved.float().mean() < 1 and (jump.x[moved].abs() <= 6).all()
    with pytest.raises(ValueError, match="superposition weight"):
        superposition(exact_field, x0, 4, weight=1.5, bins=BINS, generator=torch.Generator())


def _sample_as_before(field, x0: torch.Tensor, num_steps: int, weight: float, generator: torch.Generator):
    """The Euler superposition as it was before the jump-step option (1 - exp(-h (1 - a) lambda)), written out."""
    x = x0
    for k in range(num_steps):
        t_now, t_next = k / num_steps, (k + 1) / num_steps
        h = t_next - t_now
        heads = field(torch.full((x.shape[0],), t_now), x)
        flow = x + h * weight * heads.velocity
        probability = -torch.expm1(-h * (1.0 - weight) * heads.rate)
        jumped = torch.rand(x.shape, generator=generator) < probability
        x = torch.where(jumped, BINS.sample(heads.logits, generator).to(x.dtype), flow)
    return x


def test_the_default_jump_step_gives_bitwise_the_samples_of_before():
    x0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    before = _sample_as_before(exact_field, x0, 16, 0.5, torch.Generator().manual_seed(1))
    now = superposition(exact_field, x0, 16, weight=0.5, bins=BINS, generator=torch.Generator().manual_seed(1))
    assert torch.equal(now.x, before)
    assert GMJumpConfig().sampler.jump_step == GMSuperpositionConfig().sampler.jump_step == "exponential"
    other = superposition(
        exact_field, x0, 16, weight=0.5, bins=BINS, generator=torch.Generator().manual_seed(1), jump_step="bernoulli"
    )
    assert not torch.equal(other.x, before)


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0, 3.0])
def test_the_jump_scheduler_is_exact_for_a_rate_c_over_one_minus_t(c):
    """For lambda_s = c / (1 - s) (the mixture path kappa_t = 1 - (1 - t)^c: rate kappa' / (1 - kappa)), the scheduler's
    no-jump probabilities multiply to the path's exact (1 - t)^c on any grid; exp(-h lambda) and Bernoulli(h lambda)
    do not (except Bernoulli at c = 1, where h lambda = 1 - (1 - t - h) / (1 - t))."""
    grid = [0.0, 0.1, 0.35, 0.5, 0.8, 0.9]

    def survival(step: str) -> float:
        stay = torch.ones((), dtype=torch.float64)
        for t, t_next in itertools.pairwise(grid):
            stay = stay * (1 - jump_probability(torch.tensor(c / (1 - t), dtype=torch.float64), t, t_next, step))
        return stay.item()

    exact = (1 - grid[-1]) ** c
    assert survival("scheduler") == pytest.approx(exact, rel=1e-12)
    assert abs(survival("exponential") - exact) > 1e-3
    assert (abs(survival("bernoulli") - exact) < 1e-12) == (c == 1.0)
    # The rate read at a clamped time t_rate: c = (1 - t_rate) lambda, the same survival.
    one_step = jump_probability(torch.tensor(c / (1 - 0.5), dtype=torch.float64), 0.6, 0.8, "scheduler", t_rate=0.5)
    assert one_step.item() == pytest.approx(1 - (0.2 / 0.4) ** c, rel=1e-12)
    # Scaled by 1 - a, and to t = 1: every entry with a positive rate jumps, one with a zero rate does not.
    rates = torch.tensor([0.0, c])
    torch.testing.assert_close(jump_probability(rates, 0.75, 1.0, "scheduler", scale=0.5), torch.tensor([0.0, 1.0]))
    half = jump_probability(torch.tensor([c / 0.5]), 0.5, 0.75, "scheduler", scale=0.5)
    torch.testing.assert_close(half, torch.tensor([1 - 0.5 ** (c / 2)]))


def test_the_jump_scheduler_samples_the_mixture_path_in_a_few_steps():
    """lambda = 2 / (1 - t): the fraction of entries that jumped by t = 1/2 is kappa = 1 - (1 - t)^2 = 3/4 exactly with
    the scheduler at 4 steps; 1 - exp(-h lambda) gives 0.719, Bernoulli(h lambda) 0.786."""
    x0 = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0))

    def field(t, x):
        rate = (2 / (1 - t)).view(-1, 1).expand_as(x)
        return GeneratorHeads(None, rate, torch.zeros(x.shape[0], BINS.count, x.shape[1]))

    def jumped(step: str) -> float:
        generator = torch.Generator().manual_seed(1)
        x = superposition(field, x0, 4, weight=0.0, bins=BINS, generator=generator, t1=0.5, jump_step=step).x
        return (x != x0).float().mean().item()

    # Standard error 0.003.
    assert abs(jumped("scheduler") - 0.75) < 0.012
    assert abs(jumped("exponential") - 0.719) < 0.012 and abs(jumped("bernoulli") - 0.786) < 0.012


@pytest.mark.parametrize(
    ("config", "nfe"),
    [
        (GMJumpConfig(bins=8), 8),
        (GMSuperpositionConfig(bins=8), 8),
        (GMSuperpositionConfig(bins=8, sampler={"name": "heun"}), 16),
        (GMSuperpositionConfig(bins=8, sampler={"name": "heun", "superposition_weight": 0.0}), 8),
        (GMJumpConfig(bins=8, sampler={"jump_step": "bernoulli"}), 8),
        (GMSuperpositionConfig(bins=8, sampler={"jump_step": "scheduler"}), 8),
    ],
    ids=["jump", "superposition", "mixed", "mixed-pure-jump", "jump-bernoulli", "superposition-scheduler"],
)
def test_sampling_is_reproducible_and_counts_its_evaluations(config, nfe):
    objective = build_objective(config, Interpolant())
    torch.manual_seed(0)
    model = build_model(MLPConfig(hidden=16, depth=2, embedding_dim=8), 2, objective.model_kind)
    x0 = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    first, again = objective.sample(model, x0, 8), objective.sample(model, x0, 8)
    assert first.nfe == nfe and first.x.shape == (300, 2)
    assert torch.equal(first.x, again.x)
    reseeded = config.model_copy(update={"sampler": config.sampler.model_copy(update={"seed": 1})})
    assert not torch.equal(first.x, build_objective(reseeded, Interpolant()).sample(model, x0, 8).x)


def _train(make_config, objective: dict, steps: int) -> tuple[float, float]:
    """KL of 64-step samples on the checkerboard, before and after `steps` steps of the shared Trainer."""
    config = make_config(
        objective=objective,
        model={"hidden": 128, "depth": 3, "embedding_dim": 32},
        train={"steps": steps, "batch_size": 256, "checkpoint_interval": 10**6, "ema_decays": [0.99]},
        eval={"metrics": ["kl"], "steps": [64], "num_samples": 4000, "reference_samples": 4000},
    )
    trainer = trainer_for(config)
    untrained = trainer.run_evaluation().metrics["kl/nfe-64"]
    result = trainer.run()
    assert result.status == "finished"
    return untrained, result.metrics["kl/nfe-64"]


JUMP = {"bins": 32, "value_range": [-4.5, 4.5]}


def test_a_trained_jump_model_samples_the_checkerboard_far_better_than_untrained(make_config):
    untrained, trained = _train(make_config, {"name": "gm_jump", **JUMP}, 1000)
    # Measured: 2.00 untrained, 0.46-0.66 trained (600-1500 steps); the 2-D KL of the data's own 4000 samples is ~0.1.
    assert math.isfinite(trained) and trained < 0.4 * untrained, (untrained, trained)


def test_the_superposition_trains_and_samples(make_config):
    objective = {"name": "gm_superposition", **JUMP, "sampler": {"name": "heun", "superposition_weight": 0.5}}
    untrained, trained = _train(make_config, objective, 1000)
    assert math.isfinite(trained) and trained < 0.5 * untrained, (untrained, trained)
