"""Convergence speed: the area under a metric-versus-training-step curve, normalised by the budget.

The curve is what a run logged at its evaluations (step k, value m_k). Before the first evaluation it is held at the
first value (nothing was measured there, and an untrained model's value would dominate the area); between evaluations
it is linear (the trapezoid rule). Divided by the last step, the area is the metric's mean over training: a run that
reaches a value early scores near that value, one that reaches it only at the end scores near its starting value.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def normalised_area(steps: Sequence[int], values: Sequence[float]) -> float:
    """Area under the curve (steps, values) from step 0 to the last step, divided by the last step.

    Args:
        steps: evaluation steps, strictly increasing, the first > 0 allowed (the curve is flat before it).
        values: the metric at those steps, same length, at least one.
    Returns:
        the mean of the piecewise-linear curve over [0, last step]; the single value when there is one evaluation.
    """
    if len(steps) != len(values) or not steps:
        raise ValueError(f"need one value per step and at least one step, got {len(steps)} steps, {len(values)} values")
    if any(b <= a for a, b in itertools.pairwise(steps)) or steps[0] < 0:
        raise ValueError(f"steps must be non-negative and strictly increasing, got {list(steps)}")
    if steps[-1] == 0:
        return float(values[0])
    area = steps[0] * values[0]
    for (a, va), (b, vb) in itertools.pairwise(zip(steps, values, strict=True)):
        area += 0.5 * (va + vb) * (b - a)
    return float(area / steps[-1])
