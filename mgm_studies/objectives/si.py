"""The stochastic-interpolant velocity objective `si` (spec section 2); it also trains teachers."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from mgm_studies.configbase import StrictModel
from mgm_studies.interpolants import Interpolant
from mgm_studies.objectives.base import Objective, ObjectiveOutput, squared_norm
from mgm_studies.objectives.time_laws import TimeLawConfig
from mgm_studies.sampling import SAMPLERS, SampleResult, VelocityFn


class SIConfig(StrictModel):
    name: Literal["si"] = "si"
    time_law: TimeLawConfig = TimeLawConfig()
    sampler: Literal["euler", "heun"] = "euler"


class StochasticInterpolantObjective(Objective):
    """Regress v(t, I(t)) on dI(t): loss per sample ||v(t, I(t)) - dI(t)||^2, summed over data dimensions.

    Its minimiser is the marginal velocity b(t, x) = E[dI(t) | I(t) = x], whose probability-flow ODE from
    x0 ~ N(0, sigma0^2 I) at t = 0 lands on the data law at t = 1.
    """

    name = "si"
    model_kind = "velocity"

    def __init__(self, config: SIConfig, interpolant: Interpolant, teacher: VelocityFn | None = None) -> None:
        super().__init__(interpolant, teacher)
        self.config = config

    def __call__(self, model: nn.Module, x1: Tensor, generator: torch.Generator) -> ObjectiveOutput:
        path = self.draw_path(x1, self.config.time_law, generator)
        return ObjectiveOutput(loss=squared_norm(model(path.t, path.xt) - path.dxt))

    def sample(self, model: nn.Module, x0: Tensor, num_steps: int) -> SampleResult:
        return SAMPLERS[self.config.sampler](model, x0, num_steps)
