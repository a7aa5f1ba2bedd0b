"""A restarted trial sends each step and each evaluation once (no Ray needed: `send` records what Ray would get)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mgm_studies.names import STEP
from mgm_studies.runs import trainer_for
from mgm_studies.training.ray_train import RayReporter


class _Stopped(Exception):
    pass


def _trial(config, checkpoint_dir: Path, sent: list[dict], *, stop_at: int | None = None, reported_through: int = 0):
    def send(result: dict, folder: Path | None) -> None:
        sent.append(result)
        if result[STEP] == stop_at:  # the trial's process dies right after this result reached Ray
            raise _Stopped

    reporter = RayReporter(
        send,
        total_steps=config.train.num_steps,
        metrics=["sw2/nfe-1"],
        modes=["min"],
        reported_through=reported_through,
    )
    trainer = trainer_for(config, checkpoint_dir=checkpoint_dir, reporter=reporter)
    reporter.export = trainer.export
    return trainer


def test_a_restarted_trial_does_not_send_again_what_its_last_result_held(make_config, tmp_path):
    """The result at step 40 carries the Trainer checkpoint of step 30 (checkpoints every 30 steps, evaluations
    every 20): the restarted trial replays steps 31-40 and their evaluation, and must not send them again."""
    config = make_config(
        train={"steps": 60, "batch_size": 64, "checkpoint_interval": 30, "log_interval": 5, "ema_decays": [0.9]},
        eval={"metrics": ["sw2"], "steps": [1], "num_samples": 100, "reference_samples": 100, "interval": 20},
    )
    first: list[dict] = []
    with pytest.raises(_Stopped):
        _trial(config, tmp_path, first, stop_at=40).run()
    second: list[dict] = []
    restarted = _trial(config, tmp_path, second, reported_through=40)
    assert restarted.step == 30
    restarted.run()

    results = first + second
    assert [r[STEP] for r in results] == [20, 40, 60]
    steps = [step for r in results for step, _ in r["mgm/scalars"]]
    assert steps == list(range(1, 61))
