"""What every objective is: a small callable that returns an unreduced loss (spec section 7)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mgm_studies.interpolants import Interpolant
from mgm_studies.sampling import SampleResult, VelocityFn

ModelKind = Literal["velocity", "two_time", "generator"]


@dataclass
class ObjectiveOutput:
    """loss: (B,) unreduced per-sample loss; diagnostics: scalar tensors (detached) logged under their names."""

    loss: Tensor
    diagnostics: dict[str, Tensor] = field(default_factory=dict)


class Objective(abc.ABC):
    """A training objective. The trainer reduces the loss, steps the optimiser and logs the diagnostics.

    `model_kind` tells the trainer which network to build (a velocity field `v(t, x)`, a two-time map, a one-step
    generator); `sample` turns that network into samples, so evaluation needs no per-objective branch.
    """

    name: ClassVar[str]
    model_kind: ClassVar[ModelKind]
    # Distillation objectives train against a frozen teacher velocity b(t, x); `build_run` loads it. Sampling and
    # evaluating a finished student need no teacher, so it may be None outside training.
    needs_teacher: ClassVar[bool] = False

    def __init__(self, interpolant: Interpolant, teacher: VelocityFn | None = None) -> None:
        self.interpolant = interpolant
        self.teacher = teacher
        self.teacher_source: str | None = None  # "run:<id>" or "path:<file>", set by whoever loaded the teacher

    @abc.abstractmethod
    def __call__(self, model: nn.Module, x1: Tensor, generator: torch.Generator) -> ObjectiveOutput:
        """Per-sample loss for a data batch x1 of shape (B, *data_shape); all noise drawn from `generator`."""

    @abc.abstractmethod
    def sample(self, model: nn.Module, x0: Tensor, num_steps: int) -> SampleResult:
        """Carry noise x0 (B, *data_shape) at t = 0 to samples at t = 1 in `num_steps` steps."""
