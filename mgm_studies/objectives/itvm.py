"""ITVM: initial/terminal velocity matching (spec section 4; arXiv 2505.01169), and what `pfmm` shares with it.

Shared with `pfmm` (spec 3.3): the intermediate-time strategies (`intermediate_times`) and the frozen EMA target
network (`EMATarget`), built by the objective's `attach` hook and moved by its `after_step` hook.
`sg[.]` below is stop-gradient.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from mgm_studies.interpolants import Interpolant
from mgm_studies.objectives.base import ObjectiveOutput
from mgm_studies.objectives.flow_map_base import FlowMapConfig, FlowMapObjective, per_sample, squared_norm
from mgm_studies.objectives.teacher_config import TeacherConfig
from mgm_studies.sampling import VelocityFn

IntermediateTime = Literal["t_minus_tau", "s_plus_tau", "uniform"]
# What `t_minus_tau` and `s_plus_tau` do with a pair no longer than tau (see `intermediate_times`).
ShortPairs = Literal["clamp", "relative", "skip"]

# Below this t - r, a difference quotient over [r, t] loses about eps_float32 * (t - s) / (t - r) > 1e-4 of its
# value to cancellation (spec 4: "never divide by zero"): such a sample drops the quotient (see the objectives).
MIN_GAP = 1e-3


class IntermediateTimeConfig(FlowMapConfig):
    """Options of the objectives that split [s, t] at an intermediate time r and may hold an EMA target network."""

    intermediate_time: IntermediateTime = "t_minus_tau"
    tau: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="t_minus_tau / s_plus_tau: the length of the split-off piece (short_pairs relative: its "
        "fraction of the pair)",
    )
    # relative by measurement (issue 14; search_spaces/itvm_short_pairs_*.yaml): kl/nfe-1 over 3 seeds, tau 0.2,
    # t_minus_tau clamp / relative / skip 1.465 / 0.785 / 1.697 (checkerboard) and 1.287 / 0.739 / 0.969 (spirals).
    short_pairs: ShortPairs = Field(
        "relative",
        description="t_minus_tau / s_plus_tau on pairs with t - s <= tau: clamp (r = s or r = t: no split), relative "
        "(tau is a fraction of the pair: r = t - tau (t - s) or s + tau (t - s), every pair split), skip (such pairs "
        "leave the batch, the others re-weighted); uniform has no short pairs",
    )
    # 0.9, not the 0.999 usual for evaluation EMAs: the target bootstraps the model from itself, and a slow target
    # stalls it. Measured on the checkerboard (1500 steps, t_minus_tau): kl/nfe-1 0.82 / 0.62 / 2.25 / 3.4 for decays
    # 0 / 0.9 / 0.99 / 0.999 (the last stuck at its initial level through 2000 steps).
    target_ema: float = Field(
        0.9, ge=0.0, lt=1.0, description="EMA decay of the target network (0: a copy of the weights of every step)"
    )

    @model_validator(mode="after")
    def _relative_tau_inside_the_pair(self) -> IntermediateTimeConfig:
        if self.short_pairs == "relative" and self.tau >= 1.0:
            raise ValueError(
                f"with short_pairs 'relative', tau is a fraction of the pair and must be < 1 (got {self.tau}): "
                "tau = 1 puts r on an end of every pair"
            )
        return self


class ITVMConfig(IntermediateTimeConfig):
    name: Literal["itvm"] = "itvm"
    teacher: TeacherConfig
    lambda_initial: float = Field(1.0, ge=0.0, description="weight of the initial-velocity term L_I")
    lambda_terminal: float = Field(1.0, ge=0.0, description="weight of the terminal-velocity term L_T")
    detach_start: bool = Field(False, description="sg on X(s, r, x_s) in the prediction of L_T")


def intermediate_times(
    strategy: IntermediateTime,
    s: Tensor,
    t: Tensor,
    tau: float,
    generator: torch.Generator,
    short_pairs: ShortPairs = "relative",
) -> Tensor:
    """r (B,) in [s, t] for pairs s <= t (B,) (spec 4).

    `t_minus_tau`: r = max(s, t - tau), so t - r = min(tau, t - s); `s_plus_tau`: r = min(t, s + tau), so
    r - s = min(tau, t - s) (and r = t when t - s <= tau); `uniform`: r ~ U(s, t), drawn from `generator`.
    With `short_pairs` "relative" tau (< 1) is a fraction of the pair: r = t - tau (t - s), or r = s + tau (t - s),
    strictly inside every pair s < t. "skip" draws r as "clamp" does (`weigh_short_pairs` drops those pairs).
    """
    relative = short_pairs == "relative"
    if strategy == "t_minus_tau":
        return t - tau * (t - s) if relative else torch.maximum(s, t - tau)
    if strategy == "s_plus_tau":
        return s + tau * (t - s) if relative else torch.minimum(t, s + tau)
    if strategy == "uniform":
        return s + (t - s) * torch.rand(s.shape, generator=generator, device=s.device, dtype=s.dtype)
    raise ValueError(f"unknown intermediate_time {strategy!r}")


def short_pairs_of(strategy: IntermediateTime, s: Tensor, t: Tensor, tau: float, short_pairs: ShortPairs) -> Tensor:
    """Which pairs (B,) bool the strategy cannot split: t - s <= tau under `t_minus_tau` / `s_plus_tau` with "clamp"
    (r = s: the terminal term then matches the model to its own EMA over the whole pair, with no teacher signal;
    or r = t) or "skip" (dropped). None with "relative" or `uniform`. For a sorted pair of uniforms on [0, 1] the
    fraction is 1 - (1 - tau)^2: 36% at tau 0.2, 19% at 0.1."""
    if strategy == "uniform" or short_pairs == "relative":
        return torch.zeros_like(s, dtype=torch.bool)
    return t - s <= tau


def split_pairs(
    config: IntermediateTimeConfig, s: Tensor, t: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The intermediate times r (B,) of pairs s <= t (B,) under the config's strategy, tau and short-pair handling, and
    which pairs are short (B,) bool (`short_pairs_of`): what ITVM and pfmm both split their pairs with."""
    strategy, tau = config.intermediate_time, config.tau
    r = intermediate_times(strategy, s, t, tau, generator, config.short_pairs)
    return r, short_pairs_of(strategy, s, t, tau, config.short_pairs)


def weigh_short_pairs(residual: Tensor, short: Tensor, short_pairs: ShortPairs) -> Tensor:
    """The off-diagonal residual (B, ...) as the loss should see it: with "skip", the rows of short pairs are zeroed
    and the others scaled by sqrt(n / n_kept), so that their squared norms carry the batch's total weight; with the
    other handlings, unchanged."""
    if short_pairs != "skip":
        return residual
    kept = (~short).to(residual.dtype)
    return residual * per_sample((kept * short.numel() / kept.sum().clamp(min=1)).sqrt(), residual)


class EMATarget:
    """A frozen copy of the trained model (eval mode, no gradients) that follows it with EMA decay `decay`.

    Separate from the trainer's evaluation EMAs: it is the network the objective's targets come from.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self._network: nn.Module | None = None

    def attach(self, model: nn.Module) -> None:
        self._network = copy.deepcopy(model).eval().requires_grad_(False)

    @property
    def attached(self) -> bool:
        """Whether `attach` built the network (pfmm with a teacher reference never does)."""
        return self._network is not None

    @property
    def network(self) -> nn.Module:
        if self._network is None:
            raise RuntimeError("the EMA target network is built by `attach(model, dim)`: call it before the loss")
        return self._network

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """target <- decay target + (1 - decay) model, parameter by parameter; buffers are copied."""
        network = self.network
        # One fused update over all parameters, as the trainer's evaluation EMAs do (training/ema.py).
        torch._foreach_lerp_(list(network.parameters()), [p.detach() for p in model.parameters()], 1.0 - self.decay)
        for target, source in zip(network.buffers(), model.buffers(), strict=True):
            target.copy_(source)

    def state_dict(self) -> dict[str, Any]:
        return {"target": {k: v.clone() for k, v in self.network.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["target"])


class TargetNetworkHooks:
    """The hooks of an objective (mixed into it) that owns an `EMATarget` `self.target`, used when `uses_target` (pfmm
    with a teacher reference holds none). `_terms`: extra diagnostics of the last loss, logged with it."""

    target: EMATarget
    uses_target = True
    _terms: dict[str, Tensor]

    def __call__(self, model: nn.Module, x1: Tensor, generator: torch.Generator) -> ObjectiveOutput:
        if self.uses_target:
            self.target.network  # noqa: B018 -- raises before `attach`, whatever the batch holds
        output = super().__call__(model, x1, generator)  # type: ignore[misc]
        output.diagnostics.update(self._terms)
        self._terms = {}
        return output

    def attach(self, model: nn.Module, shape: int | tuple[int, ...], build=None) -> None:
        if self.uses_target:
            self.target.attach(model)

    def after_step(self, model: nn.Module, phase: str, step: int) -> None:
        if phase == "model" and self.uses_target:
            self.target.update(model)

    def state_dict(self) -> dict[str, Any]:
        return self.target.state_dict() if self.uses_target else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.uses_target:
            self.target.load_state_dict(state)


class InitialTerminalVelocityMatching(TargetNetworkHooks, FlowMapObjective):
    """`itvm` (spec 4): per off-diagonal sample, lambda_I L_I + lambda_T L_T with r from `intermediate_time`:

    L_I = ||u(s, s, x_s) - b_teacher(s, x_s)||^2 (the initial velocity),
    L_T = ||(X(s, t, x_s) - X(s, r, x_s)) / (t - r) - sg[u_ema(r, t, X(s, r, x_s))]||^2 (the terminal average
    velocity, no time derivative, against the EMA target started at the student's own point at r).
    Diagonal samples (fraction eta) regress u(t, t, x_t) on b_teacher(t, x_t), as every flow-map distillation does.

    `detach_start`: X(s, r, x_s) enters the prediction as sg[X(s, r, x_s)], so the gradient of L_T flows only
    through X(s, t, x_s); the target side is stopped either way (its start point too).

    Where t - r <= MIN_GAP (`s_plus_tau` with t - s <= tau gives r = t; a near-zero draw of `uniform`), the quotient is
    ill-defined: that sample pays lambda_I L_I only, with a unit denominator in the masked-out branch so that no
    inf or NaN reaches the gradients. `loss/terminal` averages over the samples that keep the term.
    The numerator is formed as (t - s) u(s, t, x_s) - (r - s) u(s, r, x_s): x_s cancels exactly.

    `short_pairs` "skip": a pair with t - s <= tau (`short_pairs_of`) pays neither term and the others are weighted
    n / n_kept; "relative" splits every pair strictly inside (`intermediate_times`).

    Before the trainer calls `attach(model, dim)` there is no target network, and the loss raises.
    """

    name = "itvm"
    needs_teacher = True

    def __init__(self, config: ITVMConfig, interpolant: Interpolant, teacher: VelocityFn | None = None) -> None:
        super().__init__(config, interpolant, teacher)
        self.target = EMATarget(config.target_ema)
        self._terms = {}

    def offdiagonal_residual(
        self, model: nn.Module, s: Tensor, t: Tensor, xs: Tensor, generator: torch.Generator
    ) -> Tensor:
        """Both residuals side by side, (B', 2 * prod(data_shape)), each scaled by the square root of its weight:
        the base's squared norm of it is lambda_I L_I + lambda_T L_T."""
        config = self.config
        r, short = split_pairs(config, s, t, generator)
        initial = model(s, s, xs) - self.teacher_velocity(s, xs)

        gap = t - r
        has_terminal = gap > MIN_GAP
        u_start = model(s, r, xs)
        x_start = xs + per_sample(r - s, xs) * u_start  # X(s, r, x_s)
        start_increment = per_sample(r - s, xs) * (u_start.detach() if config.detach_start else u_start)
        safe_gap = per_sample(torch.where(has_terminal, gap, torch.ones_like(gap)), xs)
        prediction = (per_sample(t - s, xs) * model(s, t, xs) - start_increment) / safe_gap
        with torch.no_grad():
            target = self.target.network(r, t, x_start.detach())
        terminal = (prediction - target) * per_sample(has_terminal.to(xs.dtype), xs)

        initial_loss, terminal_loss = squared_norm(initial.detach()), squared_norm(terminal.detach())
        self._terms = {
            "loss/initial": initial_loss.mean(),
            "loss/terminal": terminal_loss.sum() / has_terminal.sum().clamp(min=1),
            "time/t_minus_r": gap.detach().mean(),
            "time/terminal_fraction": has_terminal.to(xs.dtype).mean(),
            "time/short_pair_fraction": short.to(xs.dtype).mean(),
        }
        residual = torch.cat(
            [
                math.sqrt(config.lambda_initial) * initial.flatten(1),
                math.sqrt(config.lambda_terminal) * terminal.flatten(1),
            ],
            dim=1,
        )
        return weigh_short_pairs(residual, short, config.short_pairs)
