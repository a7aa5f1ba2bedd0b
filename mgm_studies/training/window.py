"""The steps whose losses are still on the device: reported, and checked for a non-finite loss or gradient norm,
in one host copy per window (every `train.log_interval` steps, and before every evaluation or checkpoint)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from mgm_studies.training.reporter import Reporter


@dataclass
class PendingStep:
    step: int
    names: list[str]  # `loss`, `grad_norm`, `loss/<phase>`, ..., then diagnostics
    values: list[Tensor]  # 0-d tensors on the device, one per name
    lr: float


def report_window(
    pending: list[PendingStep], reporter: Reporter, started: float, start_step: int
) -> tuple[int | None, float]:
    """Report the pending steps (the last with the steps per second since `start_step`, begun at `started`).
    Returns (the first step whose loss or gradient norm is not finite, else None; the last step's loss)."""
    values = torch.stack([v for p in pending for v in p.values]).cpu().tolist()  # one host copy per window
    offset, last_loss = 0, math.nan
    for p in pending:
        scalars = dict(zip(p.names, values[offset : offset + len(p.names)], strict=True))
        offset += len(p.names)
        checked = (v for k, v in scalars.items() if k.startswith(("loss", "grad_norm")))
        if not all(math.isfinite(v) for v in checked):
            return p.step, last_loss
        scalars["lr"] = p.lr
        if p is pending[-1]:
            scalars["train/steps_per_s"] = (p.step - start_step) / max(time.perf_counter() - started, 1e-9)
            last_loss = scalars.get("loss", math.nan)
        reporter.report_scalars(p.step, scalars)
    return None, last_loss
