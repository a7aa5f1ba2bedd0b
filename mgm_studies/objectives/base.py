"""What every objective is: a small callable that returns an unreduced loss (spec section 7)."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from mgm_studies.interpolants import Interpolant, PathSample
from mgm_studies.objectives.time_laws import TimeLawConfig, sample_times
from mgm_studies.sampling import SampleResult, VelocityFn


@dataclass(frozen=True)
class VelocityHeads:
    """The model kind of a time-conditioned network with `heads` outputs per data channel (generator matching:
    velocity, jump rate, jump-law logits): forward(t (B,), x (B, *data_shape)) -> (B, heads * C, ...), head-major,
    where C is the first data dimension (d for vectors, channels for images)."""

    heads: int

    def __post_init__(self) -> None:
        if self.heads < 1:
            raise ValueError(f"heads must be >= 1, got {self.heads}")


@dataclass(frozen=True)
class DenoisingGeneratorKind:
    """The model kind of a one-step generator built around a velocity network v(t, x) (MGM after a denoising warm-up):
    G(z) = scale_x z + scale_v v(time, z), the data prediction of the path at `time` (for the linear path
    D(x, t) = x + (1 - t) v(t, x)). forward(z (B, *data_shape)) -> (B, *data_shape)."""

    time: float
    scale_x: float
    scale_v: float


ModelKind = Literal["velocity", "two_time", "generator"] | VelocityHeads | DenoisingGeneratorKind


@dataclass
class ObjectiveOutput:
    """loss: (B,) unreduced per-sample loss; diagnostics: scalar tensors (detached) logged under their names."""

    loss: Tensor
    diagnostics: dict[str, Tensor] = field(default_factory=dict)


def per_sample(coefficient: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1), to broadcast a per-sample time against x of shape (B, *data_shape)."""
    return coefficient.view(-1, *[1] * (x.dim() - 1))


def squared_norm(residual: Tensor) -> Tensor:
    """(B, *data_shape) -> (B,): the squared residual summed over data dimensions."""
    return residual.square().flatten(1).sum(dim=1)


class Objective(abc.ABC):
    """A training objective. The trainer reduces the loss, steps the optimisers and logs the diagnostics.

    `model_kind` tells the trainer which network to build (a velocity field `v(t, x)`, a two-time map, a one-step
    generator); `sample` turns that network into samples, so evaluation needs no per-objective branch.

    Objectives that need more than one loss and one optimiser declare it through small hooks instead of a branch in
    the trainer (spec section 7): `networks` (trainable networks they own, e.g. MGM's critic, each with its own
    optimiser), `phases` (which optimiser steps a training step takes, in order: "model" or a `networks` key),
    `loss` (the loss of one phase), `trained_with` (modules trained by a phase's optimiser beside its network),
    `attach` / `after_step` (build and update what they hold, e.g. ITVM's EMA target)
    and `state_dict` / `load_state_dict` (what a checkpoint must carry beyond the trainer's own state).
    """

    name: ClassVar[str]
    model_kind: ClassVar[ModelKind]
    # Distillation objectives train against a frozen teacher velocity b(t, x); `build_run` loads it. Sampling and
    # evaluating a finished student need no teacher, so it may be None outside training.
    needs_teacher: ClassVar[bool] = False
    # MGM's optional teacher is a starting point: its weights are copied (same network, the path without gamma).
    teacher_gives_weights: ClassVar[bool] = False
    # MGM's midpoint argument needs alpha(t) = beta(1 - t): the run config refuses other schedules for it.
    needs_symmetric_interpolant: ClassVar[bool] = False
    # Generator matching's CondOT path is the linear interpolant with no gamma and unit noise (spec section 6).
    needs_condot_interpolant: ClassVar[bool] = False
    # The flow maps' learned per-(s, t) loss weight (`learned_weight: true`): the run config refuses it elsewhere.
    supports_learned_weight: ClassVar[bool] = False
    # Metrics an objective reports beside `loss` and the evaluation's (MGM: `mgm/divergence`): a study may optimise
    # them, and the sweep logs them from a trial's results (`studies/space_checks.objective_metrics`).
    reported_metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, interpolant: Interpolant, teacher: VelocityFn | None = None) -> None:
        problems = self.interpolant_problems(interpolant)
        if problems:
            raise ValueError("; ".join(message for _, message in problems))
        self.interpolant = interpolant
        self.teacher = teacher
        self.teacher_source: str | None = None  # "run:<id>" or "path:<file>", set by whoever loaded the teacher

    @classmethod
    def interpolant_problems(cls, interpolant: Interpolant) -> list[tuple[str, str]]:
        """(interpolant field, why) for each way `interpolant` is refused by this objective: the one check, which the
        run config reports by field and the constructor raises."""
        problems = []
        if cls.needs_symmetric_interpolant and not interpolant.symmetric:
            why = f"objective {cls.name!r} needs a symmetric interpolant (alpha(t) = beta(1 - t): 'linear', 'trig', or "
            problems.append(("schedule", f"{why}'poly' with poly_power 1); {interpolant.schedule!r} is not"))
        if cls.needs_condot_interpolant and not interpolant.condot:  # x_t = (1 - t) x0 + t z, x0 ~ N(0, I)
            have = {"schedule": interpolant.schedule, "gamma": interpolant.gamma_kind, "sigma0": interpolant.sigma0}
            why = f"objective {cls.name!r} trains on the CondOT path N(t z, (1 - t)^2 I): it needs"
            for field, wanted in (("schedule", "linear"), ("gamma", "none"), ("sigma0", 1.0)):
                if have[field] != wanted:
                    problems.append((field, f"{why} {field} {wanted!r}, got {have[field]!r}"))
        return problems

    def draw_path(
        self, x1: Tensor, law: TimeLawConfig, generator: torch.Generator, t_max: float | None = None
    ) -> PathSample:
        """x0, z, then t from `law` (clamped to <= t_max), and the path through them: the draw order that si and gm
        share, so that one generator gives both the same batch. x1: (B, *data_shape)."""
        x0 = self.interpolant.noise(tuple(x1.shape), generator, device=x1.device)
        z = torch.randn(x1.shape, generator=generator, device=x1.device)
        t = sample_times(law, x1.shape[0], generator, x1.device)
        return self.interpolant.sample(x0, x1, z, t if t_max is None else t.clamp(max=t_max))

    @abc.abstractmethod
    def __call__(self, model: nn.Module, x1: Tensor, generator: torch.Generator) -> ObjectiveOutput:
        """Per-sample loss for a data batch x1 of shape (B, *data_shape); all noise drawn from `generator`."""

    @abc.abstractmethod
    def sample(self, model: nn.Module, x0: Tensor, num_steps: int) -> SampleResult:
        """Carry noise x0 (B, *data_shape) at t = 0 to samples at t = 1 in `num_steps` steps."""

    # ------------------------------------------------------------------ hooks (defaults: one loss, one optimiser)
    def attach(
        self, model: nn.Module, shape: int | tuple[int, ...], build: Callable[[str], nn.Module] | None = None
    ) -> None:
        """Called once by the trainer after `model` (on its device) is built, under the run's seed, before a resume
        loads state: build owned networks or EMA targets here (on `model`'s device). `shape` is one sample's shape
        ((d,) for vectors; an int d means (d,)); `build(kind)` makes a fresh network of that kind for this data
        with the run's model config (`velocity`, `two_time`, `generator`)."""

    def networks(self) -> dict[str, nn.Module]:
        """Trainable networks owned by the objective, by phase name; the trainer gives each its own optimiser."""
        return {}

    def trained_with(self, phase: str) -> dict[str, nn.Module]:
        """Modules the objective owns (built in `attach`) whose parameters the optimiser of `phase` trains together
        with that phase's network, under one gradient clip, e.g. the flow maps' learned loss weight w(s, t). The
        trainer checkpoints them; evaluation and sampling never see them."""
        return {}

    def optimizer_options(self, phase: str) -> dict[str, Any]:
        """Overrides of `train.optimizer` (lr, betas, ...) for the optimiser of `phase`."""
        return {}

    def begin_step(self, step: int, total_steps: int) -> None:
        """Called at the start of training step `step` (0-based) of `total_steps`, also after a resume: for options
        that follow a schedule (e.g. the annealed cap on t - s of the flow maps). Must be a function of the step."""

    def phases(self, step: int) -> tuple[str, ...]:
        """The optimiser steps of training step `step` (0-based), in order."""
        return ("model",)

    def ema_start(self) -> int:
        """The training step from which the model's EMAs average: at that step they restart from the current weights
        (e.g. MGM's game, whose generator is not the warm-up's denoiser). 0: from the start, no restart."""
        return 0

    def loss(self, phase: str, model: nn.Module, x1: Tensor, generator: torch.Generator) -> ObjectiveOutput:
        """The loss whose gradient the optimiser of `phase` follows."""
        if phase != "model":
            raise ValueError(f"objective {self.name!r} has no phase {phase!r}")
        return self(model, x1, generator)

    def after_step(self, model: nn.Module, phase: str, step: int) -> None:
        """Called after each optimiser step of `phase` (e.g. to move an EMA target towards `model`)."""

    def evaluation_checks(
        self, model: nn.Module, dataset: Any, generator: torch.Generator, device: torch.device
    ) -> tuple[dict[str, float], dict[str, str]]:
        """Objective-specific checks at every evaluation of `model` (the evaluated weights) on `dataset`: metrics and
        tags to log (e.g. MGM's independent divergence estimate). None by default."""
        return {}, {}

    def state_dict(self) -> dict[str, Any]:
        """State the objective holds beyond `networks()` weights (which the trainer saves): e.g. an EMA target."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
