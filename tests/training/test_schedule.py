"""The `sqrt` learning-rate schedule (the flow-map paper's square-root decay, EDM2's form) and its config rules."""

from __future__ import annotations

import math

import pydantic
import pytest

from mgm_studies.config import LRScheduleConfig
from mgm_studies.training.schedule import lr_factor

TOTAL = 10**6  # sqrt ignores the run's length


def test_sqrt_is_one_until_decay_start_then_the_inverse_square_root_of_the_step():
    schedule = LRScheduleConfig(name="sqrt", decay_start=100)
    steps = ((0, 1.0), (50, 1.0), (100, 1.0), (225, 2 / 3), (400, 0.5), (10_000, 0.1), (35_000, math.sqrt(1 / 350)))
    for step, factor in steps:
        assert lr_factor(schedule, step, TOTAL) == pytest.approx(factor, rel=1e-12), step


def test_sqrt_is_continuous_at_decay_start():
    start = 35_000
    schedule = LRScheduleConfig(name="sqrt", decay_start=start)
    before, at, after = (lr_factor(schedule, step, TOTAL) for step in (start - 1, start, start + 1))
    assert before == at == 1.0
    assert after == pytest.approx(1 - 1 / (2 * start), abs=1 / start**2)  # sqrt(d / (d + 1)): a step of O(1/d)


def test_a_linear_warm_up_multiplies_the_sqrt_decay():
    warm = LRScheduleConfig(name="sqrt", decay_start=100, warmup_steps=10)
    assert lr_factor(warm, 0, TOTAL) == pytest.approx(0.1)
    assert lr_factor(warm, 4, TOTAL) == pytest.approx(0.5)
    assert lr_factor(warm, 9, TOTAL) == lr_factor(warm, 50, TOTAL) == 1.0
    assert lr_factor(warm, 400, TOTAL) == pytest.approx(0.5)
    # A decay that starts inside the warm-up: the two factors multiply (as EDM2's ramp-up and decay do).
    early = LRScheduleConfig(name="sqrt", decay_start=25, warmup_steps=100)
    assert lr_factor(early, 49, TOTAL) == pytest.approx(0.5 * math.sqrt(25 / 49))
    assert lr_factor(early, 100, TOTAL) == pytest.approx(0.5)


def test_the_other_schedules_are_unchanged_by_the_new_one():
    cosine = LRScheduleConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(cosine, 0, 110) == 0.1 and lr_factor(cosine, 60, 110) == pytest.approx(0.55)
    assert LRScheduleConfig().decay_start is None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"name": "sqrt"}, "decay_start"),  # sqrt needs to know when to start
        ({"name": "sqrt", "decay_start": 0}, "decay_start"),
        ({"name": "cosine", "decay_start": 100}, "decay_start"),  # only sqrt reads it
        ({"name": "constant", "decay_start": 100}, "decay_start"),
        ({"name": "sqrt", "decay_start": 100, "min_lr_ratio": 0.1}, "min_lr_ratio"),  # sqrt has no floor
    ],
)
def test_nonsense_combinations_are_refused_naming_the_field(options, field):
    with pytest.raises(pydantic.ValidationError) as error:
        LRScheduleConfig(**options)
    assert [e["loc"] for e in error.value.errors()] == [(field,)]
