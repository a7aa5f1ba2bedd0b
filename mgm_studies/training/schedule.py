"""Learning-rate factor as a pure function of the step, so a resume needs no scheduler state."""

from __future__ import annotations

import math

from mgm_studies.config import LRScheduleConfig


def lr_factor(schedule: LRScheduleConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base lr for optimiser step `step` (0-based) of `total_steps`."""
    if schedule.name == "sqrt":
        return _warmup(schedule, step) * sqrt_decay(step, schedule.decay_start)
    if step < schedule.warmup_steps:
        return _warmup(schedule, step)
    if schedule.name == "constant":
        return 1.0
    progress = (step - schedule.warmup_steps) / max(1, total_steps - schedule.warmup_steps)
    floor = schedule.min_lr_ratio
    if schedule.name == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return 1.0 - (1.0 - floor) * min(progress, 1.0)


def _warmup(schedule: LRScheduleConfig, step: int) -> float:
    """The linear warm-up (step + 1) / warmup_steps, 1 after it."""
    return min(1.0, (step + 1) / schedule.warmup_steps) if schedule.warmup_steps else 1.0


def sqrt_decay(step: int, decay_start: int) -> float:
    """1 / sqrt(max(step / decay_start, 1)): 1 up to `decay_start`, then sqrt(decay_start / step).

    EDM2's `learning_rate_schedule` (NVlabs/edm2 training/training_loop.py: lr / sqrt(max(t / t_ref, 1)), with t the
    images seen before the step, here the steps done). The flow-map paper (arXiv 2505.18825, Table 2) states only
    "square-root decay after 35k steps"; its code (nmboffi/flow-maps) was not readable here, so the EDM2 form is
    assumed. Continuous at `decay_start`; a warm-up multiplies it, as EDM2's ramp-up does.
    """
    return 1.0 / math.sqrt(max(step / decay_start, 1.0))
