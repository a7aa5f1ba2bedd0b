"""A finished run's model as one file: its resolved config and its raw and EMA weights.

`sample`, `evaluate` and (in distillation) teachers load it with `weights_only=True`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mgm_studies.builders import build_dataset, build_model
from mgm_studies.config import RunConfig, parse_run_config
from mgm_studies.data import VectorDataset, data_shape
from mgm_studies.objectives import Objective, build_objective


@dataclass
class ExportedModel:
    config: RunConfig
    model: nn.Module  # eval mode, carrying the requested EMA (or raw) weights
    objective: Objective
    dataset: VectorDataset
    step: int
    ema: float | None  # the decay whose weights `model` carries; None for the raw weights


def save_exported(state: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def load_exported(path: Path, *, ema: float | str | None = "config", device: str = "cpu") -> ExportedModel:
    """Rebuild the network of an exported run. `ema`: "config" (the run's evaluated EMA), a decay, or None (raw)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    config = parse_run_config(json.loads(state["config"]))
    # No teacher: sampling and evaluating a distilled model never call it.
    dataset = build_dataset(config)
    objective = build_objective(config.objective, config.interpolant.build())
    model = build_model(config.model, data_shape(dataset), objective.model_kind)
    model.load_state_dict(state["model"])
    decay = config.evaluated_ema() if ema == "config" else ema
    if decay is not None:
        key = repr(float(decay))
        if key not in state["ema"]:
            raise ValueError(f"run has no EMA with decay {decay}; it tracked {sorted(state['ema'])}")
        with torch.no_grad():
            for target, source in zip(model.parameters(), state["ema"][key], strict=True):
                target.copy_(source)
    return ExportedModel(config, model.to(device).eval(), objective, dataset, int(state["step"]), decay)
