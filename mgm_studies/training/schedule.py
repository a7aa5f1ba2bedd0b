"""Learning-rate factor as a pure function of the step, so a resume needs no scheduler state."""

from __future__ import annotations

import math

from mgm_studies.config import LRScheduleConfig


def lr_factor(schedule: LRScheduleConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base lr for optimiser step `step` (0-based) of `total_steps`."""
    if step < schedule.warmup_steps:
        return (step + 1) / schedule.warmup_steps
    if schedule.name == "constant":
        return 1.0
    progress = (step - schedule.warmup_steps) / max(1, total_steps - schedule.warmup_steps)
    floor = schedule.min_lr_ratio
    if schedule.name == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return 1.0 - (1.0 - floor) * min(progress, 1.0)
