"""What every flow-map objective shares (spec section 3): configs, time pairs, derivatives, the diagonal term.

A two-time model u(s, t, x) defines the map X(s, t, x) = x + (t - s) u(s, t, x). Each objective in
`flow_map.py` only says how its off-diagonal residual is formed; the draws, the diagonal term and sampling live here.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import AliasChoices, Field, model_validator
from torch import Tensor, nn

from mgm_studies.configbase import StrictModel
from mgm_studies.interpolants import Interpolant
from mgm_studies.objectives.base import Objective, ObjectiveOutput, per_sample, squared_norm
from mgm_studies.objectives.loss_weight import LossWeight, weighted_loss
from mgm_studies.objectives.time_laws import TimeLawConfig, sample_times
from mgm_studies.sampling import SampleResult, VelocityFn

Derivative = Literal["jvp", "finite_difference"]


class FlowMapConfig(StrictModel):
    """Options of every flow-map objective. The `time_law` draws the diagonal times; its `t_eps` bounds both times."""

    diagonal_fraction: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        # `eta` was this field's name (and the paper's symbol): old configs and exported runs still load.
        validation_alias=AliasChoices("diagonal_fraction", "eta"),
        description="fraction of each batch on the diagonal s = t (a velocity there), the rest off it (s < t); "
        "arXiv 2505.18825 Table 2's eta 0.75 counts the diagonal as read: diagonal_fraction 0.75 (eta is a "
        "deprecated alias)",
    )
    learned_weight: bool = Field(
        False,
        description="weigh each sample's loss L as exp(-w(s, t)) L + w(s, t) with a learned w (loss_weight.py; "
        "arXiv 2505.18825 after EDM2), trained by the model's optimiser",
    )
    time_law: TimeLawConfig = TimeLawConfig()
    max_gap: float | None = Field(None, gt=0.0, le=1.0, description="cap on t - s off the diagonal; None: no cap")
    max_gap_anneal: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="fraction of training over which the cap grows linearly from max_gap to 1; None: a fixed cap",
    )

    @model_validator(mode="after")
    def _anneal_needs_a_cap(self) -> FlowMapConfig:
        if self.max_gap_anneal is not None and self.max_gap is None:
            raise ValueError("max_gap_anneal anneals the cap max_gap towards 1: set max_gap too (e.g. 0.1)")
        return self

    def gap_cap(self, step: int, total_steps: int) -> float | None:
        """The cap on t - s at optimiser step `step` (0-based) of `total_steps` (spec 3: delta annealed to 1)."""
        if self.max_gap is None or self.max_gap_anneal is None:
            return self.max_gap
        progress = min(1.0, step / max(1.0, self.max_gap_anneal * total_steps))
        return self.max_gap + (1.0 - self.max_gap) * progress


class DerivativeConfig(FlowMapConfig):
    """A flow-map objective whose residual holds a derivative of X: forward-mode AD, or central differences."""

    derivative: Derivative = "jvp"
    # 1e-4, not the 1e-3 of spec 3: the sinusoidal time embedding scales t by 1000, and at h = 1e-3 its fastest
    # feature turns by a whole radian. Off-diagonal loss of lsd / esd / lmd / emd against jvp (MLP 256x4, float32):
    # h = 1e-3: 17-19 % off; 3e-4: 2 %; 1e-4: 0.2 %; 3e-5: 0.03-0.13 %; 1e-5: 0.3-0.6 % (cancellation).
    fd_step: float = Field(1e-4, gt=0.0, description="finite_difference: the step h of (f(p + h) - f(p - h)) / 2h")


def flow_map(model: nn.Module, s: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """X(s, t, x) = x + (t - s) u(s, t, x); s, t: (B,), x: (B, *data_shape). Out-of-place, so jvp runs through it."""
    return x + per_sample(t - s, x) * model(s, t, x)


def directional_derivative(
    fn: Callable[..., Tensor],
    primals: tuple[Tensor, ...],
    tangents: tuple[Tensor, ...],
    derivative: Derivative,
    fd_step: float,
) -> tuple[Tensor, Tensor]:
    """(fn(*primals), d/dh fn(primals + h tangents) at h = 0).

    `jvp`: one forward-mode pass (`torch.func.jvp`); the tangent output backpropagates to the model's parameters.
    `finite_difference`: the central difference (fn(p + h v) - fn(p - h v)) / 2h, an explicit ablation.
    """
    if derivative == "jvp":
        return torch.func.jvp(fn, primals, tangents)
    plus = fn(*(p + fd_step * v for p, v in zip(primals, tangents, strict=True)))
    minus = fn(*(p - fd_step * v for p, v in zip(primals, tangents, strict=True)))
    return fn(*primals), (plus - minus) / (2 * fd_step)


def sample_pairs(
    n: int, max_gap: float | None, lo: float, hi: float, generator: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    """n pairs s < t, uniform on the band {0 <= s < t <= 1, t - s <= max_gap}, mapped affinely onto [lo, hi].

    The gap d has density proportional to 1 - d on [0, max_gap] (inverse CDF below), then s ~ U[0, 1 - d].
    With no cap this is the law of a sorted pair of uniforms. Returns s, t: (n,) each.
    """
    cap = 1.0 if max_gap is None else max_gap
    u_gap, u_start = torch.rand(2, n, generator=generator, device=device)
    gap = 1 - torch.sqrt(1 - u_gap * (2 * cap - cap**2))
    s = u_start * (1 - gap)
    return lo + (hi - lo) * s, lo + (hi - lo) * (s + gap)


class FlowMapObjective(Objective):
    """Diagonal samples regress u(t, t, .) on a velocity; off-diagonal samples pay the subclass's residual.

    Draws, per batch: x0, z, then the diagonal times t (time law; the first round(diagonal_fraction B) samples), then
    the off-diagonal pairs (s, t), then whatever the residual needs. x_s = I(s) for every sample (s = t on the
    diagonal). Loss per sample (B,): the squared residual of its own kind, summed over data dimensions; with
    `learned_weight`, exp(-w(s, t)) times that plus w(s, t), w built in `attach` and trained with the model.
    """

    model_kind = "two_time"

    def __init__(self, config: FlowMapConfig, interpolant: Interpolant, teacher: VelocityFn | None = None) -> None:
        super().__init__(interpolant, teacher)
        if config.learned_weight and not self.supports_learned_weight:
            raise ValueError(f"objective {self.name!r} has no learned loss weight yet: set learned_weight false")
        self.config = config
        self.max_gap = config.gap_cap(0, 1)
        self.loss_weight: LossWeight | None = None

    def attach(
        self, model: nn.Module, shape: int | tuple[int, ...], build: Callable[[str], nn.Module] | None = None
    ) -> None:
        # A subclass whose own `attach` does not call this one (itvm's and pfmm's target hooks) would never build w:
        # those keep `supports_learned_weight` False, and the config refuses the option for them.
        if self.config.learned_weight:
            device = next(model.parameters()).device
            self.loss_weight = LossWeight().to(device)

    def trained_with(self, phase: str) -> dict[str, nn.Module]:
        return {"loss_weight": self.loss_weight} if phase == "model" and self.loss_weight is not None else {}

    def begin_step(self, step: int, total_steps: int) -> None:
        self.max_gap = self.config.gap_cap(step, total_steps)

    @abc.abstractmethod
    def offdiagonal_residual(
        self, model: nn.Module, s: Tensor, t: Tensor, xs: Tensor, generator: torch.Generator
    ) -> Tensor:
        """The residual (B', *data_shape) at pairs s < t (B',) from x_s = I(s) (B', *data_shape)."""

    def teacher_velocity(self, t: Tensor, x: Tensor) -> Tensor:
        """b_teacher(t, x), frozen: no gradient reaches the teacher or flows through it."""
        if self.teacher is None:  # built without one (to sample a finished student): training needs it
            raise ValueError(f"objective {self.name!r} distils a teacher velocity: give one to train")
        with torch.no_grad():
            return self.teacher(t, x.detach())

    def __call__(self, model: nn.Module, x1: Tensor, generator: torch.Generator) -> ObjectiveOutput:
        n, device = x1.shape[0], x1.device
        num_diagonal = round(self.config.diagonal_fraction * n)
        law = self.config.time_law
        x0 = self.interpolant.noise(tuple(x1.shape), generator, device=device)
        z = torch.randn(x1.shape, generator=generator, device=device)
        t_diagonal = sample_times(law, num_diagonal, generator, device)
        s_off, t_off = sample_pairs(n - num_diagonal, self.max_gap, law.t_eps, 1 - law.t_eps, generator, device)
        path = self.interpolant.sample(x0, x1, z, torch.cat([t_diagonal, s_off]))

        losses, diagnostics = [], {}
        if num_diagonal > 0:
            xt, t = path.xt[:num_diagonal], t_diagonal
            target = self.teacher_velocity(t, xt) if self.needs_teacher else path.dxt[:num_diagonal]
            diagonal = squared_norm(model(t, t, xt) - target)
            losses.append(diagonal)
            diagnostics["loss/diagonal"] = diagonal.detach().mean()
        if num_diagonal < n:
            residual = self.offdiagonal_residual(model, s_off, t_off, path.xt[num_diagonal:], generator)
            offdiagonal = squared_norm(residual)
            losses.append(offdiagonal)
            diagnostics["loss/offdiagonal"] = offdiagonal.detach().mean()
        if self.config.max_gap_anneal is not None:
            diagnostics["time/max_gap"] = torch.tensor(self.max_gap, device=device)
        loss = torch.cat(losses)
        if self.config.learned_weight:
            if self.loss_weight is None:
                raise ValueError(f"objective {self.name!r}: the learned loss weight is built by attach(model, shape)")
            log_weight = self.loss_weight(torch.cat([t_diagonal, s_off]), torch.cat([t_diagonal, t_off]))
            diagnostics["loss/unweighted"] = loss.detach().mean()
            diagnostics["loss_weight/mean"] = log_weight.detach().float().mean()
            loss = weighted_loss(loss, log_weight.to(loss.dtype))
        return ObjectiveOutput(loss=loss, diagnostics=diagnostics)

    @torch.no_grad()
    def sample(self, model: nn.Module, x0: Tensor, num_steps: int) -> SampleResult:
        """x <- X(t_k, t_{k+1}, x) on the uniform grid t_k = k / N; NFE = num_steps."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        x = x0
        for t_now, t_next in itertools.pairwise(k / num_steps for k in range(num_steps + 1)):
            s, t = (torch.full((x.shape[0],), v, dtype=x.dtype, device=x.device) for v in (t_now, t_next))
            x = model.flow_map(s, t, x)
        return SampleResult(x=x, nfe=num_steps)
