"""Convergence speed: the area under a metric-versus-training-step curve, normalised by the budget.

Every run reports it beside the metric: at each evaluation, `area_<metric>/nfe-K` is the normalised area of
`<metric>/nfe-K` over the evaluations so far (`AreaTracker`), so its last value covers the whole run, a sweep can
optimise it like any metric, and a report tabulates it (arXiv 2505.01169's claim for ITVM is about convergence speed).

The curve is what a run logged at its evaluations (step k, value m_k). Before the first evaluation it is held at the
first value (nothing was measured there, and an untrained model's value would dominate the area); between evaluations
it is linear (the trapezoid rule). Divided by the last step, the area is the metric's mean over training: a run that
reaches a value early scores near that value, one that reaches it only at the end scores near its starting value.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from mgm_studies.names import AREA_PREFIX, COUNTERS, area_metric, parse_eval_metric


def normalised_area(steps: Sequence[int], values: Sequence[float]) -> float:
    """The mean of the curve (steps, values) over [0, last step]: `steps` strictly increasing (the first may be > 0:
    the curve is flat before it), one value each, at least one; the single value when there is one evaluation."""
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


class AreaTracker:
    """The evaluations of one run so far, and the area of each quality metric over them.

    State (`state_dict`) goes into the run's checkpoints, so a resumed run's areas cover the evaluations before the
    resume too.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[tuple[int, float]]] = {}

    def update(self, step: int, metrics: Mapping[str, float]) -> dict[str, float]:
        """Record the evaluation at `step`; returns {area_<metric>/nfe-K: normalised area} for its quality metrics.
        An evaluation repeated at a step already recorded (a resume) replaces it."""
        areas = {}
        for name, value in metrics.items():
            parsed = parse_eval_metric(name)
            if parsed is None or parsed[0] in COUNTERS or parsed[0].startswith(AREA_PREFIX):
                continue
            points = [p for p in self.history.get(name, []) if p[0] < step] + [(step, float(value))]
            self.history[name] = points
            areas[area_metric(name)] = normalised_area([s for s, _ in points], [v for _, v in points])
        return areas

    def state_dict(self) -> dict[str, list[tuple[int, float]]]:
        return {name: list(points) for name, points in self.history.items()}

    def load_state_dict(self, state: Mapping[str, Sequence[Sequence[float]]]) -> None:
        self.history = {name: [(int(s), float(v)) for s, v in points] for name, points in state.items()}
