"""What a Trainer is handed: a run's data, path, objective and network builder, built from its config by
`builders.build_parts` (and `runs.build_run`, which resolves a distillation teacher first)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from mgm_studies.data import VectorDataset
from mgm_studies.interpolants import Interpolant
from mgm_studies.objectives import Objective
from mgm_studies.objectives.base import ModelKind


@dataclass(frozen=True)
class RunParts:
    """dataset: samples of shape (d,) or (C, H, W). interpolant: the path x_t between noise and data.
    objective: the loss, holding the interpolant (and a distillation teacher, loaded).
    build_network: a freshly initialised network of a kind (`objective.model_kind`, or a kind the objective asks
    for in `attach`) for this data's shape, on the CPU; it draws its initial weights from torch's global RNG."""

    dataset: VectorDataset
    interpolant: Interpolant
    objective: Objective
    build_network: Callable[[ModelKind], nn.Module]
