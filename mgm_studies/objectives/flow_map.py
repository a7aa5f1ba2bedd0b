"""Flow-map objectives for a two-time model u(s, t, x) (spec sections 3.1, 3.2, 3.4).

Self-distillation (no teacher; arXiv 2505.18825): `lsd`, `esd`, `psd_midpoint`, `psd_uniform`.
Distillation of a frozen teacher velocity b(t, x): `lmd`, `emd`. The shared machinery (draws of (s, t), the
diagonal term, derivatives, sampling) is in `flow_map_base.py`; each class here forms its off-diagonal residual.
`sg[.]` below is stop-gradient.
"""

from __future__ import annotations

import abc
from typing import Literal

import torch
from torch import Tensor, nn

from mgm_studies.objectives.flow_map_base import (
    DerivativeConfig,
    FlowMapConfig,
    FlowMapObjective,
    directional_derivative,
    flow_map,
    per_sample,
)
from mgm_studies.objectives.teacher_config import TeacherConfig


class LSDConfig(DerivativeConfig):
    name: Literal["lsd"] = "lsd"


class ESDConfig(DerivativeConfig):
    name: Literal["esd"] = "esd"


class PSDMidpointConfig(FlowMapConfig):
    name: Literal["psd_midpoint"] = "psd_midpoint"


class PSDUniformConfig(FlowMapConfig):
    name: Literal["psd_uniform"] = "psd_uniform"


class LMDConfig(DerivativeConfig):
    name: Literal["lmd"] = "lmd"
    teacher: TeacherConfig


class EMDConfig(DerivativeConfig):
    name: Literal["emd"] = "emd"
    teacher: TeacherConfig
    stopgrad_jvp: bool = False  # sg on the transport term J_x X . b: the continuous-consistency form


def _time_derivative(
    objective: FlowMapObjective, model: nn.Module, s: Tensor, t: Tensor, xs: Tensor
) -> tuple[Tensor, Tensor]:
    """(X(s, t, x_s), d/dt X(s, t, x_s)): one JVP in t, tangent (0, 1, 0); d/dt X = u + (t - s) d/dt u."""
    config = objective.config
    return directional_derivative(
        lambda t_: flow_map(model, s, t_, xs), (t,), (torch.ones_like(t),), config.derivative, config.fd_step
    )


def _eulerian_residual(
    objective: FlowMapObjective, model: nn.Module, s: Tensor, t: Tensor, xs: Tensor, v: Tensor, stopgrad: bool
) -> Tensor:
    """d/ds X(s, t, x_s) + J_x X(s, t, x_s) . v: zero when X is constant along the flow of the velocity v.

    Without `stopgrad`, one JVP of (s, x) -> X(s, t, x) with tangent (1, v); with it, the transport term
    J_x X . v is a second JVP taken without a graph (sg).
    """
    config = objective.config

    def along_flow(s_: Tensor, x_: Tensor) -> Tensor:
        return flow_map(model, s_, t, x_)

    options = (config.derivative, config.fd_step)
    if not stopgrad:
        return directional_derivative(along_flow, (s, xs), (torch.ones_like(s), v), *options)[1]
    _, d_ds = directional_derivative(lambda s_: flow_map(model, s_, t, xs), (s,), (torch.ones_like(s),), *options)
    with torch.no_grad():
        _, transport = directional_derivative(lambda x_: flow_map(model, s, t, x_), (xs,), (v,), *options)
    return d_ds + transport


class LagrangianSelfDistillation(FlowMapObjective):
    """`lsd` (spec 3.4): residual d/dt X(s, t, I(s)) - sg[u(t, t, X(s, t, I(s)))].

    The map's time derivative at its end point must equal the model's own diagonal velocity there.
    """

    name = "lsd"
    supports_learned_weight = True

    def offdiagonal_residual(
        self, model: nn.Module, s: Tensor, t: Tensor, xs: Tensor, generator: torch.Generator
    ) -> Tensor:
        x_end, dx_dt = _time_derivative(self, model, s, t, xs)
        with torch.no_grad():
            target = model(t, t, x_end.detach())
        return dx_dt - target


class EulerianSelfDistillation(FlowMapObjective):
    """`esd` (spec 3.4): residual d/ds X(s, t, I(s)) + sg[J_x X(s, t, I(s)) . u(s, s, I(s))]."""

    name = "esd"
    supports_learned_weight = True

    def offdiagonal_residual(
        self, model: nn.Module, s: Tensor, t: Tensor, xs: Tensor, generator: torch.Generator
    ) -> Tensor:
        with torch.no_grad():
            velocity = model(s, s, xs)
        return _eulerian_residual(self, model, s, t, xs, velocity, stopgrad=True)


class _ProgressiveSelfDistillation(FlowMapObjective):
    """`psd` (spec 3.4): with r = g s + (1 - g) t, the residual
    u(s, t, I(s)) - sg[(1 - g) u(s, r, I(s)) + g u(r, t, X(s, r, I(s)))].

    The semigroup identity (t - s) u(s, t) = (r - s) u(s, r) + (t - r) u(r, t, X(s, r)), divided by t - s.
    """

    supports_learned_weight = True

    @abc.abstractmethod
    def intermediate_weight(self, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """g (n,) in [0, 1]."""

    def offdiagonal_residual(
        self, model: nn.Module, s: Tensor, t: Tensor, xs: Tensor, generator: torch.Generator
    ) -> Tensor:
        g = self.intermediate_weight(s.shape[0], generator, s.device)
        r = g * s + (1 - g) * t
        with torch.no_grad():
            u_first = model(s, r, xs)
            x_mid = xs + per_sample(r - s, xs) * u_first
            g_x = per_sample(g, xs)
            target = (1 - g_x) * u_first + g_x * model(r, t, x_mid)
        return model(s, t, xs) - target


class ProgressiveSelfDistillationMidpoint(_ProgressiveSelfDistillation):
    """`psd_midpoint`: g = 1/2, r the midpoint of [s, t]."""

    name = "psd_midpoint"

    def intermediate_weight(self, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
        return torch.full((n,), 0.5, device=device)


class ProgressiveSelfDistillationUniform(_ProgressiveSelfDistillation):
    """`psd_uniform`: g ~ U[0, 1] per sample, drawn from the objective's generator."""

    name = "psd_uniform"

    def intermediate_weight(self, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
        return torch.rand(n, generator=generator, device=device)


class LagrangianMapDistillation(FlowMapObjective):
    """`lmd` (spec 3.1): residual d/dt X(s, t, x_s) - b_teacher(t, sg[X(s, t, x_s)]).

    The teacher's spatial Jacobian is never formed: it sees a detached end point.
    """

    name = "lmd"
    supports_learned_weight = True
    needs_teacher = True

    def offdiagonal_residual(
        self, model: nn.Module, s: Tensor, t: Tensor, xs: Tensor, generator: torch.Generator
    ) -> Tensor:
        x_end, dx_dt = _time_derivative(self, model, s, t, xs)
        return dx_dt - self.teacher_velocity(t, x_end)


class EulerianMapDistillation(FlowMapObjective):
    """`emd` (spec 3.2): residual d/ds X(s, t, x_s) + J_x X(s, t, x_s) . b_teacher(s, x_s).

    One JVP of (s, x) -> X(s, t, x) with tangent (1, b_teacher(s, x_s)); `stopgrad_jvp` detaches the transport term.
    """

    name = "emd"
    supports_learned_weight = True
    needs_teacher = True

    def offdiagonal_residual(
        self, model: nn.Module, s: Tensor, t: Tensor, xs: Tensor, generator: torch.Generator
    ) -> Tensor:
        velocity = self.teacher_velocity(s, xs)
        return _eulerian_residual(self, model, s, t, xs, velocity, stopgrad=self.config.stopgrad_jvp)
