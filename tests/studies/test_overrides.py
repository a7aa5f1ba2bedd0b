"""`sweep --set` and the resource flags (issue 15): checked before Ray starts, mapped onto the base's resources, and
the space hash kept by resource-only overrides. No Ray here: every refusal happens before it."""

from __future__ import annotations

import time

import pytest
import ray
import yaml

from mgm_studies.cli import main
from mgm_studies.configbase import ConfigError
from mgm_studies.studies.overrides import sweep_overrides
from mgm_studies.studies.space import load_study_spec

SPACE = {
    "name": "overrides",
    "base": {
        "data": {"name": "checkerboard"},
        "model": {"hidden": 16, "depth": 2, "embedding_dim": 8},
        "train": {"steps": 20, "batch_size": 32},
        "eval": {"metrics": ["kl"], "steps": [1], "num_samples": 100, "reference_samples": 200},
    },
    "metric": "kl/nfe-1",
    "search": {"algorithm": "grid"},
    "space": {"train.optimizer.lr": {"grid": [1e-3, 2e-3]}},
}


@pytest.fixture
def space(mlflow_env):
    path = mlflow_env / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return path


def load(path, sets=(), **flags):
    return load_study_spec(path, sweep_overrides(list(sets), **flags))


@pytest.mark.parametrize(
    ("arguments", "field", "words"),
    [
        (["--set", "train.stepz=3"], "--set train.stepz", "not a run-config field"),
        (["--set", "train.steps=-1"], "--set train.steps", "greater than or equal to 1"),
        (["--set", "train.steps=[1"], "--set train.steps", "not valid YAML"),
        (["--set", "train.optimizer.lr=0.1"], "--set train.optimizer.lr", "swept by the space"),
        (["--set", "train.seed=3"], "--set train.seed", "seeds"),
        (["--set", "data.path=x.csv"], "--set data.path", "not a run-config field"),
        (["--set", "resources.gpus_per_worker=-1"], "--set resources.gpus_per_worker", "greater than or equal to 0"),
        (["--set", "novalue"], "--set", "expected dotted.key=value"),
        (["--gpus-per-trial", "-0.5"], "--gpus-per-trial", "must be >= 0"),
        (["--gpus-per-trial", "0.00001"], "--gpus-per-trial", "Ray's unit"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial", "must be > 0"),
        (["--workers-per-trial", "0"], "--workers-per-trial", "must be >= 1"),
        (
            ["--set", "resources.gpus_per_worker=1", "--gpus-per-trial", "0.5"],
            "--set resources.gpus_per_worker / --gpus-per-trial",
            "give one of them",
        ),
        (["--set", "resources={workers: 2}", "--workers-per-trial", "1"], "--set resources / --workers-per-trial", ""),
    ],
)
def test_a_bad_override_is_exit_2_naming_it_before_ray_starts(space, capsys, arguments, field, words):
    started = time.monotonic()
    assert main(["sweep", str(space), "--storage", str(space.parent / "ray_results"), *arguments]) == 2
    assert time.monotonic() - started < 20  # a config check, not a sweep
    err = capsys.readouterr().err
    assert f"  {field}: " in err and words in err
    assert not ray.is_initialized() and not (space.parent / "ray_results").exists()
    assert not (space.parent / "mlflow.db").exists()  # nothing written either


def test_set_overrides_reach_the_base_and_change_the_space_hash(space):
    plain = load(space)
    changed = load(space, ["train.steps=7", "model={hidden: 8, depth: 1, embedding_dim: 4}"])
    assert changed.base["train"]["steps"] == 7 and changed.base["model"]["hidden"] == 8
    assert changed.trial_config({"train.optimizer.lr": 1e-3}, 0).train.num_steps == 7
    assert changed.space_hash() != plain.space_hash()


def test_resource_overrides_keep_the_space_hash(space):
    plain = load(space)
    for sets, flags in (
        (["resources.gpus_per_worker=0.25"], {}),
        ([], {"gpus_per_trial": 0.25, "cpus_per_trial": 1.0}),
        (["resources={workers: 2, executor: train}", "resources.device=cuda"], {}),
    ):
        assert load(space, sets, **flags).space_hash() == plain.space_hash()


def test_the_short_flags_are_per_trial_totals_split_over_the_workers(space):
    one = load(space, gpus_per_trial=0.25, cpus_per_trial=2).trial_config({"train.optimizer.lr": 1e-3}, 0)
    assert (one.resources.workers, one.resources.gpus_per_worker, one.resources.cpus_per_worker) == (1, 0.25, 2.0)
    two = load(space, workers_per_trial=2, gpus_per_trial=1, cpus_per_trial=3).base["resources"]
    assert two == {"workers": 2, "gpus_per_worker": 0.5, "cpus_per_worker": 1.5}
    # Workers from a --set count too, and a flag for another field does not conflict with it.
    via_set = load(space, ["resources.workers=4"], gpus_per_trial=2).base["resources"]
    assert via_set == {"workers": 4, "gpus_per_worker": 0.5}


def test_overrides_are_shown_as_given():
    overrides = sweep_overrides(["train.steps=7"], gpus_per_trial=0.25)
    assert [o.shown() for o in overrides] == ["train.steps=7", "--gpus-per-trial=0.25"]
    with pytest.raises(ConfigError):
        sweep_overrides([], gpus_per_trial=float("nan"))


def test_a_fractional_gpu_this_machine_lacks_is_refused_before_ray_starts(space, capsys, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the sweep would start")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["sweep", str(space), "--storage", str(space.parent / "ray_results"), "--gpus-per-trial", "0.25"]) == 2
    assert "a trial needs 0.25 GPU" in capsys.readouterr().err
    assert not ray.is_initialized() and not (space.parent / "mlflow.db").exists()
