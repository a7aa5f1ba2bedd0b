"""MGM's collapse detector: a fresh critic fitted at each evaluation against the frozen generator. It must fire on a
critic that cannot learn (learning rate 1e-12: it stays at its random initialisation, reporting a divergence near 0
while the generator is far from the data) and stay quiet on a healthy run of the same size."""

from __future__ import annotations

import pytest

from mgm_studies.config import parse_run_config
from mgm_studies.runs import trainer_for
from mgm_studies.training.reporter import RecordingReporter


def _run(critic_lr: float, steps: int, capsys) -> tuple[dict[str, float], dict[str, str], str]:
    config = parse_run_config(
        {
            "data": {"name": "eight_gaussians"},
            "model": {"hidden": 64, "depth": 2},
            "objective": {
                "name": "mgm",
                "critic_hidden": 64,
                "critic_depth": 2,
                "critic_lr": critic_lr,
                "collapse_check_steps": 150,
            },
            "train": {"steps": steps, "batch_size": 256, "checkpoint_interval": 10**6, "optimizer": {"lr": 5e-4}},
            "eval": {"metrics": ["kl"], "steps": [1], "num_samples": 2000},
        }
    )
    reporter = RecordingReporter()
    capsys.readouterr()
    trainer_for(config, reporter=reporter).run()
    final = reporter.evaluations[-1]
    return final.metrics, final.tags, capsys.readouterr().err


@pytest.mark.slow
def test_the_detector_fires_on_a_critic_that_cannot_learn_and_is_quiet_on_a_healthy_one(capsys):
    # Measured: broken (300 steps) critic 0.026 against a refit lower bound of 982 (the generator, given noise for a
    # signal, wandered off: kl/nfe-1 8.94); healthy (1000 steps) critic 0.12, refit 0.051, kl/nfe-1 1.48. At 300 steps
    # the healthy run is flagged too (critic 0.022, refit 0.33): its critic lags a generator that moves fast.
    broken, broken_tags, broken_err = _run(1e-12, 300, capsys)
    assert broken_tags["mgm.critic_collapse"] == "true" and "the critic has collapsed" in broken_err
    assert broken["mgm/divergence_critic"] < 0.25 * broken["mgm/divergence_refit"], broken
    healthy, healthy_tags, healthy_err = _run(1e-3, 1000, capsys)
    assert healthy_tags["mgm.critic_collapse"] == "false" and "collapsed" not in healthy_err, healthy
    assert healthy["mgm/divergence_critic"] > 0.5 * healthy["mgm/divergence_refit"], healthy
    assert healthy["mgm/critic_r2"] > broken["mgm/critic_r2"]
