"""Generator matching `gm_flow`, `gm_jump`, `gm_superposition` (spec section 6; Holderrieth et al., arXiv 2410.20587):
a marginal Markov generator learned through the conditional generators of the CondOT path p_t(x | z) =
N(t z, (1 - t)^2 I), z a data point, with a Bregman-divergence loss.

- `gm_flow`: the flow part, velocity (z - x) / (1 - t) = x1 - x0 and an MSE loss: flow matching, which is `si` on the
  linear interpolant (the path is drawn in si's order, so one generator gives both the same batch).
- `gm_jump`: per data entry a jump rate and a jump law over `bins` bins (gm_path.py); loss per entry
  lambda_model - lambda log lambda_model + lambda CE(J, J_model), the Bregman divergence of the rates (terms free of
  the model dropped) plus the rate-weighted cross-entropy of the laws. Its minimiser is the marginal rate
  E[lambda | x] and the marginal jump law, proportional to E[lambda J | x].
- `gm_superposition`: one network with both heads, losses added; sampled with the velocity scaled by a and the rate
  by 1 - a (gm_sampling.py).

One network with `heads` outputs per data channel, head-major: velocity (flow), then the rate (softplus: >= 0), then
the `bins` jump-law logits. Training and sampling clamp t to <= t_max < 1: the rate grows like 1 / (1 - t).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from mgm_studies.configbase import MAX_SEED, StrictModel
from mgm_studies.interpolants import Interpolant, PathSample
from mgm_studies.objectives.base import ModelKind, Objective, ObjectiveOutput, VelocityHeads, per_sample, squared_norm
from mgm_studies.objectives.gm_path import JumpBins, conditional_rate
from mgm_studies.objectives.gm_sampling import GeneratorHeads, JumpStep, sampling_generator, superposition
from mgm_studies.objectives.time_laws import TimeLawConfig
from mgm_studies.sampling import SAMPLERS, SampleResult, VelocityFn

_SEED = Field(
    0, ge=0, le=MAX_SEED, description="seeds the jump noise of sampling (with a fingerprint of the noise batch)"
)
_JUMP_STEP = Field(
    "exponential",
    description="a step's jump probability from the rate lambda: exponential 1 - exp(-h lambda) (default), bernoulli "
    "min(1, h lambda) (the paper's Algorithm 2), scheduler 1 - ((1 - t - h) / (1 - t))^((1 - t) lambda) "
    "(our reading of the paper's jump scheduler R_{t,t+h}; gm_sampling.jump_probability)",
)
# Model-output entries per sampling sub-batch (heads x entries x rows): about 256 MB in float32 (images with many bins).
_SAMPLE_ELEMENTS = 2**26


class GMFlowSampler(StrictModel):
    """`euler` (NFE = steps) or `heun` (NFE = 2 steps) on the velocity."""

    name: Literal["euler", "heun"] = "euler"


class GMJumpSampler(StrictModel):
    """Euler for jumps: in a step of size h an entry jumps with probability 1 - exp(-h lambda) (`jump_step`: or
    min(1, h lambda), or the jump scheduler). NFE = steps."""

    name: Literal["euler"] = "euler"
    seed: int = _SEED
    jump_step: JumpStep = _JUMP_STEP


class GMSuperpositionSampler(StrictModel):
    """The superposition with weight a: velocity x a, rate x (1 - a). `euler`: Euler flow step or jump (NFE = steps);
    `heun`: the mixed sampler, Heun on the flow part and Euler jumps (NFE = 2 steps, steps when a = 0)."""

    name: Literal["euler", "heun"] = "euler"
    superposition_weight: float = Field(0.5, ge=0.0, le=1.0, description="a: 1 is pure flow, 0 pure jump")
    seed: int = _SEED
    jump_step: JumpStep = _JUMP_STEP


class _GMConfig(StrictModel):
    time_law: TimeLawConfig = TimeLawConfig()
    t_max: float = Field(0.99, gt=0.0, lt=1.0, description="t is clamped to <= t_max (< 1) in training and sampling")


class _JumpConfig(_GMConfig):
    image_defaults: ClassVar[dict] = {"value_range": (-1.0, 1.0)}  # what image data changes: pixels lie in [-1, 1]
    bins: int = Field(64, ge=2, description="bins of the discretised jump law, per data entry")
    value_range: tuple[float, float] = Field(
        (-5.0, 5.0), description="[low, high] split into the bins; jumps land inside it (images default to [-1, 1])"
    )

    @field_validator("value_range")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError(f"needs low < high, got {list(value)}")
        return value


class GMFlowConfig(_GMConfig):
    name: Literal["gm_flow"] = "gm_flow"
    sampler: GMFlowSampler = GMFlowSampler()


class GMJumpConfig(_JumpConfig):
    name: Literal["gm_jump"] = "gm_jump"
    sampler: GMJumpSampler = GMJumpSampler()


class GMSuperpositionConfig(_JumpConfig):
    name: Literal["gm_superposition"] = "gm_superposition"
    sampler: GMSuperpositionSampler = GMSuperpositionSampler()


class _GeneratorMatching(Objective):
    """The shared part: the CondOT draw, the heads of the one network, the two losses. Per-sample losses (B,) are
    summed over data entries; diagnostics `gm/flow_loss`, `gm/rate_loss`, `gm/jump_law_loss` (batch means)."""

    needs_condot_interpolant = True
    has_flow: ClassVar[bool]
    has_jump: ClassVar[bool]

    def __init__(self, config: _GMConfig, interpolant: Interpolant, teacher: VelocityFn | None = None) -> None:
        super().__init__(interpolant, teacher)  # refuses any path but CondOT (needs_condot_interpolant)
        self.config = config
        self.bins = JumpBins(*config.value_range, config.bins) if self.has_jump else None

    @property
    def heads(self) -> int:
        """Outputs per data channel: 1 velocity (flow), 1 rate + `bins` logits (jump)."""
        return int(self.has_flow) + (1 + self.bins.count if self.bins is not None else 0)

    @property
    def model_kind(self) -> ModelKind:  # type: ignore[override]  # depends on `bins`, so per instance
        return "velocity" if self.heads == 1 else VelocityHeads(self.heads)

    def split(self, out: Tensor) -> GeneratorHeads:
        """The network's output (B, heads * C, ...) as its heads; the rate through softplus (>= 0), in float32."""
        if self.heads == 1:
            return GeneratorHeads(velocity=out, rate=None, logits=None)
        parts = out.unflatten(1, (self.heads, -1))
        first = int(self.has_flow)
        return GeneratorHeads(
            velocity=parts[:, 0] if self.has_flow else None,
            rate=F.softplus(parts[:, first].float()),
            logits=parts[:, first + 1 :],
        )

    def __call__(self, model: nn.Module, x1: Tensor, generator: torch.Generator) -> ObjectiveOutput:
        path = self.draw_path(x1, self.config.time_law, generator, self.config.t_max)  # z has no weight: no gamma
        heads = self.split(model(path.t, path.xt))
        terms: dict[str, Tensor] = {}
        if heads.velocity is not None:  # flow matching: the conditional velocity (z - x) / (1 - t) is dI = x1 - x0
            terms["gm/flow_loss"] = squared_norm(heads.velocity - path.dxt)
        if heads.rate is not None:
            terms["gm/rate_loss"], terms["gm/jump_law_loss"] = self.jump_loss(heads, path)
        losses = list(terms.values())
        diagnostics = {name: term.detach().float().mean() for name, term in terms.items()}
        return ObjectiveOutput(loss=sum(losses[1:], losses[0]), diagnostics=diagnostics)

    def jump_loss(self, heads: GeneratorHeads, path: PathSample) -> tuple[Tensor, Tensor]:
        """(B,) each: sum over entries of lambda_model - lambda log lambda_model, and of lambda CE(J, J_model), with
        lambda = lambda_t(x | x1) and J the exact bin masses of J_t(. | x1) (gm_path.py), in float32."""
        x, z = path.xt.float(), path.x1.float()
        t = per_sample(path.t.float(), x)
        rate = conditional_rate(x, z, t)
        target = self.bins.masses(z, t)
        log_model_rate = torch.log(heads.rate.clamp_min(torch.finfo(heads.rate.dtype).tiny))
        rate_loss = heads.rate - rate * log_model_rate
        cross_entropy = -(target * torch.log_softmax(heads.logits.float(), dim=1)).sum(dim=1)
        return rate_loss.flatten(1).sum(dim=1), (rate * cross_entropy).flatten(1).sum(dim=1)

    # ------------------------------------------------------------------ sampling
    def superposition_weight(self) -> float:
        """a: 1 for the flow objective, 0 for the jump objective, the configured weight for the superposition."""
        return 1.0 if not self.has_jump else 0.0

    def sample(self, model: nn.Module, x0: Tensor, num_steps: int) -> SampleResult:
        """The superposition sampler of gm_sampling.py at weight `superposition_weight()`, on x0 (B, *data_shape) in
        sub-batches that bound the model output's memory; the jump noise is seeded per sub-batch (reproducible)."""
        sampler = self.config.sampler
        rows = max(1, _SAMPLE_ELEMENTS // (self.heads * x0[0].numel()))
        results = [
            superposition(
                lambda t, x: self.split(model(t, x)),
                part,
                num_steps,
                weight=self.superposition_weight(),
                bins=self.bins,
                generator=sampling_generator(sampler.seed, part),
                heun=sampler.name == "heun",
                t_max=self.config.t_max,
                jump_step=sampler.jump_step,
            )
            for part in x0.split(rows)
        ]
        return SampleResult(x=torch.cat([r.x for r in results]), nfe=results[0].nfe)


class FlowGeneratorMatching(_GeneratorMatching):
    """`gm_flow`: a velocity v(t, x) (the `velocity` network si trains), loss ||v(t, x_t) - (x1 - x0)||^2."""

    name = "gm_flow"
    model_kind = "velocity"
    has_flow, has_jump = True, False

    def sample(self, model: nn.Module, x0: Tensor, num_steps: int) -> SampleResult:
        """Euler or Heun on the velocity (mgm_studies.sampling), evaluated at t clamped to <= t_max."""
        t_max = self.config.t_max
        return SAMPLERS[self.config.sampler.name](lambda t, x: model(t.clamp(max=t_max), x), x0, num_steps)


class JumpGeneratorMatching(_GeneratorMatching):
    """`gm_jump`: a rate and `bins` jump-law logits per data entry; sampled by Euler jumps."""

    name = "gm_jump"
    has_flow, has_jump = False, True


class SuperpositionGeneratorMatching(_GeneratorMatching):
    """`gm_superposition`: velocity, rate and logits from one network, losses added; sampled at weight a."""

    name = "gm_superposition"
    has_flow, has_jump = True, True

    def superposition_weight(self) -> float:
        return self.config.sampler.superposition_weight
