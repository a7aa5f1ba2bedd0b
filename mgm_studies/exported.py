"""A finished run's model as one file: its resolved config and its raw and EMA weights.

`sample`, `evaluate` and (in distillation) teachers load it with `weights_only=True`.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mgm_studies.builders import build_dataset, build_model
from mgm_studies.config import RunConfig, parse_run_config
from mgm_studies.configbase import ConfigError
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


class UnreadableCheckpoint(Exception):
    """A file that is not an exported mgm-studies model, or one that would need pickled code to load. The message
    says which, in a line; it never repeats torch's advice to load with `weights_only=False`."""


def read_exported(path: Path) -> tuple[dict, RunConfig]:
    """The exported state (tensors and plain values only: `weights_only=True`) and its validated run config."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # no forbidden object: the bytes are not a torch file at all
            raise UnreadableCheckpoint(
                f"{path} is not a readable torch checkpoint ({_unpickler_reason(exc)})"
            ) from None
        raise UnreadableCheckpoint(
            f"{path} holds pickled Python objects besides tensors and plain values; it is refused, since loading it "
            "could run code (an mgm-studies export holds weights and a config only)"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise UnreadableCheckpoint(f"{path} is not a readable torch checkpoint ({_first_line(exc)})") from None
    missing = [key for key in ("config", "model", "ema", "step") if not isinstance(state, dict) or key not in state]
    if missing:
        raise UnreadableCheckpoint(f"{path} is not an mgm-studies export: it has no {', '.join(missing)}")
    try:
        config = parse_run_config(json.loads(state["config"]))
    except (ConfigError, TypeError, ValueError) as exc:
        raise UnreadableCheckpoint(f"{path} holds a run config that does not validate: {exc}") from None
    return state, config


def _unpickler_reason(exc: BaseException) -> str:
    """What torch's weights-only unpickler objected to ("Unsupported operand 110"), without its advice (which
    suggests `weights_only=False`: never repeat that)."""
    lines = [line.strip() for line in str(exc).splitlines()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            reason = line.split("WeightsUnpickler error:", 1)[1].strip() or next((x for x in lines[i + 1 :] if x), "")
            return reason[:120]
    return "not a pickle torch can read"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def load_exported(path: Path, *, ema: float | str | None = "config", device: str = "cpu") -> ExportedModel:
    """Rebuild the network of an exported run. `ema`: "config" (the run's evaluated EMA), a decay, or None (raw).
    Raises UnreadableCheckpoint for a file that is not an export, ValueError for an EMA the run did not track."""
    state, config = read_exported(path)
    # No teacher: sampling and evaluating a distilled model never call it.
    dataset = build_dataset(config)
    objective = build_objective(config.objective, config.interpolant.build())
    model = build_model(config.model, data_shape(dataset), objective.model_kind)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError) as exc:
        raise UnreadableCheckpoint(f"{path}: its weights do not fit the network its config builds ({exc})") from None
    decay = config.evaluated_ema() if ema == "config" else ema
    if decay is not None:
        key = repr(float(decay))
        if key not in state["ema"]:
            raise ValueError(f"run has no EMA with decay {decay}; it tracked {sorted(state['ema'])}")
        with torch.no_grad():
            for target, source in zip(model.parameters(), state["ema"][key], strict=True):
                target.copy_(source)
    return ExportedModel(config, model.to(device).eval(), objective, dataset, int(state["step"]), decay)
