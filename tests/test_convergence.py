"""Convergence speed (convergence.py): the normalised area, and the trainer reporting it at every evaluation."""

from pathlib import Path

import pytest

from mgm_studies.convergence import AreaTracker, normalised_area
from mgm_studies.runs import trainer_for
from mgm_studies.training.reporter import RecordingReporter


def test_a_flat_curve_scores_its_value():
    assert normalised_area([250, 500, 1000], [0.7, 0.7, 0.7]) == pytest.approx(0.7)


def test_the_area_is_the_trapezoid_with_the_first_value_held_back_to_step_zero():
    # hand-computed: 100 * 4 (flat to step 100) + (4 + 2) / 2 * 100 + (2 + 1) / 2 * 200 = 400 + 300 + 300 = 1000
    assert normalised_area([100, 200, 400], [4.0, 2.0, 1.0]) == pytest.approx(1000 / 400)


def test_a_run_that_converges_earlier_scores_lower_with_the_same_final_value():
    fast = normalised_area([250, 500, 750, 1000], [1.0, 0.5, 0.5, 0.5])
    slow = normalised_area([250, 500, 750, 1000], [1.0, 1.0, 1.0, 0.5])
    assert fast < slow


def test_bad_curves_are_refused():
    with pytest.raises(ValueError, match="one value per step"):
        normalised_area([1, 2], [1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        normalised_area([2, 2], [1.0, 1.0])


# ---------------------------------------------------------------------- the trainer reports it at every evaluation
EVALUATED = {
    "train": {"steps": 60, "batch_size": 64, "checkpoint_interval": 20, "log_interval": 5, "ema_decays": [0.9]},
    "eval": {"metrics": ["kl"], "steps": [1, 2], "num_samples": 500, "reference_samples": 500, "interval": 10},
}


def test_each_evaluation_reports_the_area_of_each_quality_metric_so_far(make_config):
    reporter = RecordingReporter()
    trainer_for(make_config(**EVALUATED), reporter=reporter).run()
    evaluations = reporter.evaluations
    assert [e.step for e in evaluations] == [10, 20, 30, 40, 50, 60]
    for i, evaluation in enumerate(evaluations):
        for name in ("kl/nfe-1", "kl/nfe-2"):
            so_far = evaluations[: i + 1]
            expected = normalised_area([e.step for e in so_far], [e.metrics[name] for e in so_far])
            assert evaluation.metrics[f"area_{name}"] == pytest.approx(expected, rel=1e-12)
    assert not any(k.startswith("area_fevals") or k.startswith("area_area") for k in evaluations[-1].metrics)


class _StopAtFirstCheckpoint(RecordingReporter):
    def report_checkpoint(self, step: int, path: Path) -> None:
        super().report_checkpoint(step, path)
        raise KeyboardInterrupt


def test_a_resumed_run_keeps_the_evaluations_before_its_checkpoint_in_its_area(make_config, tmp_path):
    config = make_config(**EVALUATED)
    before = _StopAtFirstCheckpoint()
    with pytest.raises(KeyboardInterrupt):  # stopped as it writes step 20's checkpoint, before step 20's evaluation
        trainer_for(config, checkpoint_dir=tmp_path, reporter=before).run()
    after = RecordingReporter()
    trainer_for(config, checkpoint_dir=tmp_path, reporter=after).run()
    points = [(e.step, e.metrics["kl/nfe-1"]) for e in [*before.evaluations, *after.evaluations]]
    assert [s for s, _ in points] == [10, 30, 40, 50, 60]
    expected = normalised_area([s for s, _ in points], [v for _, v in points])
    assert after.evaluations[-1].metrics["area_kl/nfe-1"] == pytest.approx(expected, rel=1e-12)


def test_an_evaluation_repeated_at_a_recorded_step_replaces_it():
    tracker = AreaTracker()
    tracker.update(10, {"kl/nfe-1": 4.0})
    tracker.update(20, {"kl/nfe-1": 2.0})
    assert tracker.update(20, {"kl/nfe-1": 1.0}) == {"area_kl/nfe-1": pytest.approx((10 * 4 + 5 * 5) / 20)}
    restored = AreaTracker()
    restored.load_state_dict(tracker.state_dict())
    assert restored.update(30, {"kl/nfe-1": 1.0}) == tracker.update(30, {"kl/nfe-1": 1.0})
