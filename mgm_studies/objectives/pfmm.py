"""Progressive flow-map matching `pfmm` (spec 3.3; arXiv 2406.07507): match a two-step composition of a reference map.

`sg[.]` below is stop-gradient.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from mgm_studies.interpolants import Interpolant
from mgm_studies.objectives.flow_map_base import FlowMapObjective, flow_map, per_sample
from mgm_studies.objectives.itvm import (
    MIN_GAP,
    EMATarget,
    IntermediateTimeConfig,
    TargetNetworkHooks,
    split_pairs,
    weigh_short_pairs,
)
from mgm_studies.objectives.teacher_config import TeacherConfig
from mgm_studies.sampling import VelocityFn


class PFMMConfig(IntermediateTimeConfig):
    """`reference: teacher` integrates the teacher velocity (needs `teacher`); `reference: ema` uses the EMA target
    network (`target_ema`) and trains without a teacher."""

    name: Literal["pfmm"] = "pfmm"
    reference: Literal["teacher", "ema"] = "teacher"
    teacher: TeacherConfig | None = None
    heun_steps: int = Field(4, ge=1, description="reference teacher: Heun steps K of each reference map Xc")

    @model_validator(mode="after")
    def _teacher_iff_reference_teacher(self) -> PFMMConfig:
        if self.reference == "teacher" and self.teacher is None:
            raise ValueError("pfmm with reference 'teacher' names its teacher: set `teacher` (run, path or config)")
        if self.reference == "ema" and self.teacher is not None:
            raise ValueError("pfmm with reference 'ema' uses no teacher: remove `teacher` (or use reference 'teacher')")
        return self


def heun_average_velocity(velocity: VelocityFn, s: Tensor, t: Tensor, x: Tensor, num_steps: int) -> Tensor:
    """(Xc(s, t, x) - x) / (t - s) for Xc = K Heun steps of dx/dt = v(t, x), formed without the division, so that it
    stays defined at s == t (where it is v(s, x)). s, t: (B,), x: (B, *data_shape); 2K evaluations.

    Global error of the map O(((t - s) / K)^2) (t - s)."""
    h = (t - s) / num_steps
    h_x = per_sample(h, x)
    time, total = s, torch.zeros_like(x)
    for _ in range(num_steps):
        slope = velocity(time, x)
        average = 0.5 * (slope + velocity(time + h, x + h_x * slope))
        x, time, total = x + h_x * average, time + h, total + average
    return total / num_steps


def heun_map(velocity: VelocityFn, s: Tensor, t: Tensor, x: Tensor, num_steps: int) -> Tensor:
    """Xc(s, t, x): K Heun steps of dx/dt = v(t, x) from s to t, per sample; exactly x where s == t."""
    return x + per_sample(t - s, x) * heun_average_velocity(velocity, s, t, x, num_steps)


class ProgressiveFlowMapMatching(TargetNetworkHooks, FlowMapObjective):
    """`pfmm` (spec 3.3): per off-diagonal sample ||X(s, t, x_s) - sg[Xc(r, t, Xc(s, r, x_s))]||^2 / (t - s)^2.

    Formed as the residual u(s, t, x_s) - (target - x_s) / (t - s), the same number since X(s, t, x_s) - x_s =
    (t - s) u(s, t, x_s). Where t - s <= MIN_GAP the quotient is ill-defined and the target velocity falls back to its
    one-piece form (one Heun step of the teacher over [s, t], or u_ema(s, t, x_s)). The intermediate time r follows
    `intermediate_time` (spec 4). Diagonal samples regress u(t, t, x_t) on the teacher with reference `teacher`, on
    dI(t) with reference `ema` (self-distillation). `short_pairs` as for ITVM (`itvm.short_pairs_of`): with
    `t_minus_tau` and "clamp" a pair with t - s <= tau has r = s, a target that is the reference map over the whole
    pair; "relative" splits it, "skip" drops it and re-weights the rest.

    `needs_teacher` is decided per config: the class attribute stays False (an `ema` run loads no teacher) and the
    instance says True for reference `teacher`. With reference `ema`, `attach` must be called before the loss.
    """

    name = "pfmm"

    def __init__(self, config: PFMMConfig, interpolant: Interpolant, teacher: VelocityFn | None = None) -> None:
        super().__init__(config, interpolant, teacher)
        self.needs_teacher = config.reference == "teacher"  # type: ignore[misc]  # per config, see the docstring
        self.uses_target = config.reference == "ema"  # a teacher reference holds no network
        self.target = EMATarget(config.target_ema)
        self._terms = {}

    def reference_map(self, s: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """Xc(s, t, x), no gradient: K Heun steps of the teacher, or the EMA target's flow map."""
        if self.config.reference == "teacher":
            return heun_map(self.teacher_velocity, s, t, x, self.config.heun_steps)
        with torch.no_grad():
            return flow_map(self.target.network, s, t, x)

    def reference_average_velocity(self, s: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """(Xc(s, t, x) - x) / (t - s) in one piece, defined at s == t too: the fallback of pairs too short to divide
        by. One Heun step of the teacher (error O((t - s)^2)), or the EMA target's u_ema(s, t, x)."""
        if self.config.reference == "teacher":
            return heun_average_velocity(self.teacher_velocity, s, t, x, 1)
        with torch.no_grad():
            return self.target.network(s, t, x)

    def offdiagonal_residual(
        self, model: nn.Module, s: Tensor, t: Tensor, xs: Tensor, generator: torch.Generator
    ) -> Tensor:
        r, short = split_pairs(self.config, s, t, generator)
        self._terms = {"time/short_pair_fraction": short.to(xs.dtype).mean()}
        with torch.no_grad():
            target = self.reference_map(r, t, self.reference_map(s, r, xs))
            gap = t - s
            long_enough = gap > MIN_GAP
            safe_gap = torch.where(long_enough, gap, torch.ones_like(gap))
            target_velocity = torch.where(
                per_sample(long_enough, xs),
                (target - xs) / per_sample(safe_gap, xs),
                self.reference_average_velocity(s, t, xs),
            )
        return weigh_short_pairs(model(s, t, xs) - target_velocity, short, self.config.short_pairs)
