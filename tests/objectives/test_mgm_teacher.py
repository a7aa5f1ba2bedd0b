"""MGM started from a teacher (`objective.teacher`): a finished si run's weights instead of the in-run warm-up."""

from __future__ import annotations

import pytest
import torch

from mgm_studies.config import parse_run_config
from mgm_studies.configbase import ConfigError
from mgm_studies.exported import save_exported
from mgm_studies.runs import trainer_for

MODEL = {"hidden": 16, "depth": 2, "embedding_dim": 8}
TRAIN = {"steps": 30, "batch_size": 32, "ema_decays": [0.9], "checkpoint_interval": 10**6}


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    """A tiny si run on moons, exported with its EMA: the denoiser MGM starts from."""
    trainer = trainer_for(parse_run_config({"data": {"name": "moons"}, "model": MODEL, "train": TRAIN}))
    trainer.run()
    return save_exported(trainer.export(), tmp_path_factory.mktemp("teacher") / "final.pt")


def _mgm(teacher: dict, **sections) -> dict:
    config = {
        "data": {"name": "moons"},
        "model": MODEL,
        "interpolant": {"gamma": "sqrt", "gamma_scale": 0.1},  # MGM's observation noise; the teacher has none
        "objective": {"name": "mgm", "teacher": teacher, "collapse_check_steps": 0},
        "train": TRAIN,
    }
    return {**config, **sections}


def test_generator_and_critic_start_from_the_teachers_ema_weights(teacher_path):
    from mgm_studies.exported import load_exported

    teacher = load_exported(teacher_path, ema="config").model
    trainer = trainer_for(parse_run_config(_mgm({"path": str(teacher_path)})))
    objective, model = trainer.objective, trainer.model
    assert objective.teacher_source == f"path:{teacher_path}"
    z, t, y = torch.randn(64, 2), torch.rand(64), torch.randn(64, 2)
    with torch.no_grad():
        # The generator is the teacher's data prediction at time 0: z + v(0, z) on the linear path.
        assert torch.allclose(model(z), z + teacher(torch.zeros(64), z), atol=1e-6)
        assert torch.equal(objective.critic(t, y), teacher(t, y))  # f = v: the critic is its copy
    # No warm-up: the game (and the EMA) starts at step 0, and the copies train while the teacher stays as it was.
    assert objective.phases(0) == ("critic", "model") and objective.ema_start() == 0
    assert "denoise" not in objective.networks()
    before = [p.detach().clone() for p in teacher.parameters()]
    trainer.train_step()
    with torch.no_grad():
        assert not torch.equal(objective.critic(t, y), teacher(t, y))
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True))


def _problem_fields(config: dict) -> list[str]:
    from mgm_studies.runs import build_run

    with pytest.raises(ConfigError) as caught:
        build_run(parse_run_config(config))
    return [field for field, _ in caught.value.problems]


def test_a_teacher_of_another_dimension_is_refused_naming_the_field(tmp_path):
    other = {
        "data": {"name": "gaussian", "mean": [0.0, 0.0, 0.0]},
        "model": MODEL,
        "train": {**TRAIN, "steps": 2},
        "eval": {"metrics": ["sw2"], "num_samples": 100},
    }
    trainer = trainer_for(parse_run_config(other))
    trainer.run()
    path = save_exported(trainer.export(), tmp_path / "three.pt")
    assert _problem_fields(_mgm({"path": str(path)})) == ["objective.teacher"]


def test_a_teacher_with_another_network_or_path_is_refused(teacher_path):
    assert _problem_fields(_mgm({"path": str(teacher_path)}, model={**MODEL, "hidden": 32})) == ["objective.teacher"]
    trig = _mgm({"path": str(teacher_path)}, interpolant={"schedule": "trig"})
    assert _problem_fields(trig) == ["objective.teacher"]


def test_a_teacher_and_a_warm_up_together_are_refused():
    config = _mgm({"path": "final.pt"})
    config["objective"]["denoiser_steps"] = 10
    with pytest.raises(ConfigError) as caught:
        parse_run_config(config)
    assert caught.value.problems[0][0].startswith("objective")
    assert "denoiser_steps: 0" in caught.value.problems[0][1]
