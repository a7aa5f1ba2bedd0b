"""Sweeps end to end with a real local Ray, real Optuna and a real SQLite MLflow store (issue 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mgm_studies.exported import load_exported
from mgm_studies.studies.space import parse_study_spec
from mgm_studies.studies.sweep import run_sweep
from mgm_studies.tracking_store import open_client

pytestmark = pytest.mark.usefixtures("ray_cluster")

BASE = {
    "data": {"name": "checkerboard"},
    "model": {"hidden": 32, "depth": 2, "embedding_dim": 16},
    "train": {"steps": 60, "batch_size": 64, "checkpoint_interval": 20, "ema_decays": [0.9], "log_interval": 10},
    "eval": {"metrics": ["kl"], "steps": [1, 2], "num_samples": 500, "reference_samples": 500, "interval": 20},
}


def study(tmp_path, **fields):
    data = {"name": "test_study", "base": BASE, "metric": "kl/nfe-2", "mode": "min", **fields}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return parse_study_spec(data, source=path)


def runs(experiment: str):
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    all_runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in all_runs if r.data.tags.get("mgm.kind") == "sweep"]
    children = [r for r in all_runs if r.data.tags.get("mgm.kind") == "trial"]
    return client, parents, children


def _driver_command(tmp_path, ray_cluster: str) -> list[str]:
    """`mgm-studies sweep` of a 4-trial grid (200 steps each, one trial at a time) on the test's Ray cluster."""
    train, evaluation = {**BASE["train"], "steps": 200, "checkpoint_interval": 50}, {**BASE["eval"], "interval": 50}
    study(
        tmp_path,
        base={**BASE, "train": train, "eval": evaluation},
        search={"algorithm": "grid", "max_concurrent": 1},
        space={"interpolant.schedule": {"grid": ["linear", "trig"]}},
        seeds=[0, 1],
    )
    sweep = [sys.executable, "-m", "mgm_studies", "sweep", "space.yaml", "--quiet"]
    return [*sweep, "--storage", str(tmp_path / "ray"), "--address", ray_cluster]


def test_a_grid_sweep_records_one_parent_run_and_a_child_run_per_trial(mlflow_env, tmp_path):
    spec = study(
        tmp_path,
        search={"algorithm": "grid", "max_concurrent": 2},
        space={"interpolant.schedule": {"grid": ["linear", "trig"]}},
        seeds=[0, 1],
    )
    outcome = run_sweep(spec, storage=str(tmp_path / "ray"), verbose=0)
    assert outcome.statuses == {"finished": 4} and not outcome.interrupted

    client, parents, children = runs("test_study")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 4
    parent = parents[0]
    assert parent.data.tags["mgm.space_hash"] == spec.space_hash() and parent.data.metrics["trials/finished"] == 4
    assert "space.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    combos = sorted((c.data.params["interpolant.schedule"], c.data.params["train.seed"]) for c in children)
    assert combos == [("linear", "0"), ("linear", "1"), ("trig", "0"), ("trig", "1")]
    # Run names say what the trial is; the experiment opens on the runs table and says what to show.
    assert sorted(c.info.run_name for c in children) == ["linear seed=0", "linear seed=1", "trig seed=0", "trig seed=1"]
    experiment = client.get_experiment_by_name("test_study")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "`params.interpolant.schedule`" in experiment.tags["mlflow.note.content"]
    for child in children:
        run_id = child.info.run_id
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED" and child.data.tags["mgm.status"] == "finished"
        assert child.data.tags["mgm.config_hash"] and child.data.tags["mgm.trial_id"]
        # Every step's loss, and each evaluation's metrics at its own training step.
        assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(1, 61))
        assert [m.step for m in client.get_metric_history(run_id, "kl/nfe-2")] == [20, 40, 60]
        plots = [a.path for a in client.list_artifacts(run_id, "plots/step-000000060")]
        assert sorted(plots) == ["plots/step-000000060/nfe-1.png", "plots/step-000000060/nfe-2.png"]
        final = client.download_artifacts(run_id, "checkpoints/final.pt", str(tmp_path / run_id))
        assert load_exported(final).step == 60
    best_run, best_value, _ = outcome.best["kl/nfe-2"]
    assert best_value == min(c.data.metrics["kl/nfe-2"] for c in children)
    assert parent.data.tags["mgm.best_run.kl/nfe-2"] == best_run
    # The default keeps Tune's checkpoints (the last 2 of each trial).
    assert len(list((tmp_path / "ray").glob(f"{outcome.sweep}/*/checkpoint_*"))) == 2 * 4


def test_a_grid_over_whole_objective_sections_runs_each_objective(mlflow_env, tmp_path):
    """An axis whose values are mappings (searchers hold their labels, the objective names): the sweep resolves the
    values, never the labels, for its own checks (search_spaces/gm_superposition.yaml is such a space)."""
    gm_jump = {"name": "gm_jump", "bins": 8, "value_range": [-4.5, 4.5]}
    mgm = {"name": "mgm", "denoiser_steps": 20, "collapse_check_steps": 5}
    grid = [{"name": "si"}, gm_jump, mgm]
    spec = study(tmp_path, search={"algorithm": "grid"}, space={"objective": {"grid": grid}})
    outcome = run_sweep(spec, storage=str(tmp_path / "ray"), verbose=0)
    assert outcome.statuses == {"finished": 3}
    _, _, children = runs("test_study")
    assert sorted(c.data.params["objective.name"] for c in children) == ["gm_jump", "mgm", "si"]
    jump = next(c for c in children if c.data.params["objective.name"] == "gm_jump")
    assert jump.data.params["objective.bins"] == "8" and "kl/nfe-2" in jump.data.metrics
    # An objective's own evaluation checks reach the trial's run (MGM's collapse detector), beside its tag.
    midpoint = next(c for c in children if c.data.params["objective.name"] == "mgm")
    assert {"mgm/divergence_critic", "mgm/divergence_refit", "mgm/critic_r2"} <= set(midpoint.data.metrics)
    assert midpoint.data.tags["mgm.critic_collapse"] in ("true", "false")


def test_an_optuna_tpe_sweep_samples_inside_the_space_and_reports_the_best_trial(mlflow_env, tmp_path):
    spec = study(
        tmp_path,
        search={"algorithm": "optuna", "num_samples": 3, "max_concurrent": 2, "seed": 3},
        space={"train.optimizer.lr": {"loguniform": [1.0e-4, 1.0e-2]}, "model.hidden": {"int": [16, 48]}},
    )
    outcome = run_sweep(spec, storage=str(tmp_path / "ray"), verbose=0)
    _, parents, children = runs("test_study")
    assert outcome.statuses == {"finished": 3} and len(parents) == 1 and len(children) == 3
    drawn = {(c.data.params["train.optimizer.lr"], c.data.params["model.hidden"]) for c in children}
    assert len(drawn) == 3
    for lr, hidden in drawn:
        assert 1.0e-4 <= float(lr) <= 1.0e-2 and 16 <= int(hidden) <= 48
    best_run, best_value, best_params = outcome.best["kl/nfe-2"]
    assert best_value == min(c.data.metrics["kl/nfe-2"] for c in children)
    assert parents[0].data.tags["mgm.best_run.kl/nfe-2"] == best_run and set(best_params) >= set(spec.space)


def test_a_diverging_trial_ends_diverged_while_the_others_finish(mlflow_env, tmp_path):
    spec = study(
        tmp_path,
        base={**BASE, "train": {**BASE["train"], "grad_clip": None}},
        search={"algorithm": "grid", "max_concurrent": 2},
        space={"train.optimizer.lr": {"grid": [1.0e-3, 1.0e12]}},
    )
    outcome = run_sweep(spec, storage=str(tmp_path / "ray"), verbose=0)
    _, parents, children = runs("test_study")
    by_lr = {c.data.params["train.optimizer.lr"]: c for c in children}
    assert by_lr["0.001"].data.tags["mgm.status"] == "finished" and by_lr["0.001"].info.status == "FINISHED"
    diverged = by_lr["1000000000000.0"]
    assert diverged.data.tags["mgm.status"] == "diverged" and diverged.info.status == "FAILED"
    assert 1 <= int(diverged.data.tags["mgm.diverged_step"]) <= 60
    assert "checkpoints" not in [
        a.path for a in MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).list_artifacts(diverged.info.run_id)
    ]
    assert outcome.statuses == {"finished": 1, "diverged": 1} and parents[0].info.status == "FINISHED"
    assert outcome.best["kl/nfe-2"][0] == by_lr["0.001"].info.run_id  # the sentinel never wins


def test_asha_stops_a_bad_trial_that_runs_on_the_train_executor(mlflow_env, tmp_path):
    """Ray Train workers launched by the trial; ASHA stops the second (hopeless) trial at its first evaluation, the
    placement group of its TorchTrainer is released (else the next trial would wait for it: platform.md), and the
    third trial trains on the freed CPU."""
    import ray

    spec = study(
        tmp_path,
        base={**BASE, "resources": {"workers": 1, "executor": "train"}},
        search={"algorithm": "grid", "max_concurrent": 1, "scheduler": {"name": "asha", "grace_period": 1}},
        space={"train.optimizer.lr": {"grid": [1.0e-2, 1.0e-9, 1.2e-2]}},
    )
    outcome = run_sweep(spec, storage=str(tmp_path / "ray"), verbose=0)
    _, parents, children = runs("test_study")
    by_lr = {c.data.params["train.optimizer.lr"]: c for c in children}
    assert by_lr["0.01"].data.tags["mgm.status"] == "finished"
    stopped = by_lr["1e-09"]
    assert stopped.data.tags["mgm.status"] == "stopped" and stopped.info.status == "KILLED"
    assert int(stopped.data.tags["mgm.stopped_step"]) == 20
    # The trial after the stopped one ran (ASHA may stop it too: it is judged against the two before it).
    after = by_lr["0.012"]
    assert after.data.tags["mgm.status"] in ("finished", "stopped") and "kl/nfe-2" in after.data.metrics
    assert "error" not in outcome.statuses and sum(outcome.statuses.values()) == 3
    assert parents[0].info.status == "FINISHED"

    # The stopped trials' placement groups are gone once the sweep returns (the sweep's reaper, placement.py; Ray
    # Train's own cleaner was too slow in CI): only Ray's bookkeeping of the freed CPU may lag a moment.
    deadline = time.monotonic() + 10
    while ray.available_resources().get("CPU", 0) < 1.9 and time.monotonic() < deadline:
        time.sleep(1)
    assert ray.available_resources().get("CPU", 0) >= 1.9


def test_a_sweep_killed_with_sigkill_resumes_without_losing_or_duplicating_trials(mlflow_env, tmp_path, ray_cluster):
    command = _driver_command(tmp_path, ray_cluster)
    client = open_client(os.environ["MLFLOW_TRACKING_URI"])  # tables first, under the lock: no race with the driver
    driver = subprocess.Popen(command, cwd=tmp_path, env=dict(os.environ))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        experiment = client.get_experiment_by_name("test_study")
        finished = experiment and client.search_runs(
            [experiment.experiment_id], "tags.`mgm.status` = 'finished' and tags.`mgm.kind` = 'trial'"
        )
        if finished:
            break
        time.sleep(0.5)
    assert driver.poll() is None, "the sweep ended before it could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    _, _, before = runs("test_study")
    assert 1 <= len(before) < 4 or any(c.data.tags["mgm.status"] != "finished" for c in before)

    resumed = subprocess.run([*command, "--resume"], cwd=tmp_path, env=dict(os.environ))
    assert resumed.returncode == 0
    _, parents, children = runs("test_study")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4 and {c.data.tags["mgm.status"] for c in children} == {"finished"}
    combos = sorted((c.data.params["interpolant.schedule"], c.data.params["train.seed"]) for c in children)
    assert combos == [("linear", "0"), ("linear", "1"), ("trig", "0"), ("trig", "1")]
    assert sorted(c.info.run_name for c in children) == ["linear seed=0", "linear seed=1", "trig seed=0", "trig seed=1"]
    ids = {c.data.tags["mgm.trial_id"] for c in children}
    assert {c.info.run_id for c in before} <= {c.info.run_id for c in children} and len(ids) == 4


def test_a_sweep_sent_sigterm_stops_like_ctrl_c_and_resumes_with_each_step_once(mlflow_env, tmp_path, ray_cluster):
    """A scheduler's SIGTERM (preemption, eviction) to the driver: Tune stops the trials and saves the experiment,
    the parent and the unfinished children are closed as interrupted (exit 130); `--resume` finishes the sweep, the
    finished trials untouched, and every child's history holds each step once."""
    command = _driver_command(tmp_path, ray_cluster)
    client = open_client(os.environ["MLFLOW_TRACKING_URI"])  # created before the driver, as above
    driver = subprocess.Popen(command, cwd=tmp_path, env=dict(os.environ), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        experiment = client.get_experiment_by_name("test_study")
        trials = experiment and client.search_runs([experiment.experiment_id], "tags.`mgm.kind` = 'trial'")
        statuses = [t.data.tags.get("mgm.status") for t in trials or []]
        if "finished" in statuses and "running" in statuses:
            break
        time.sleep(0.2)
    assert driver.poll() is None, "the sweep ended before it could be stopped"
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err
    assert "sweep interrupted" in err
    _, (parent,), before = runs("test_study")
    assert parent.info.status == "KILLED" and parent.data.tags["mgm.status"] == "interrupted"
    finished = {
        c.info.run_id: c.data.tags["mgm.trial_process"] for c in before if c.data.tags["mgm.status"] == "finished"
    }
    assert finished and {c.data.tags["mgm.status"] for c in before} <= {"finished", "interrupted"}
    assert len(finished) < len(before) or len(before) < 4

    resumed = subprocess.run([*command, "--resume"], cwd=tmp_path, env=dict(os.environ))
    assert resumed.returncode == 0
    _, parents, children = runs("test_study")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4 and {c.data.tags["mgm.status"] for c in children} == {"finished"}
    assert {c.info.run_id: c.data.tags["mgm.trial_process"] for c in children if c.info.run_id in finished} == finished
    for child in children:
        assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "loss")) == list(range(1, 201))
        assert [m.step for m in client.get_metric_history(child.info.run_id, "kl/nfe-2")] == [50, 100, 150, 200]


def test_a_trial_whose_process_is_killed_resumes_from_its_last_checkpoint(mlflow_env, tmp_path):
    """The trial's process gets SIGKILL after its evaluation at step 250; Tune restarts the trial (FailureConfig)
    in a new process from the checkpoint reported with that evaluation. Results go out with each evaluation, so the
    MLflow history holds every step once: a restart from scratch would repeat steps 1-250 and their evaluation."""
    spec = study(
        tmp_path,
        base={
            **BASE,
            "train": {**BASE["train"], "steps": 2000, "checkpoint_interval": 250},
            "eval": {**BASE["eval"], "interval": 250},
        },
        search={"algorithm": "grid"},
        space={"interpolant.schedule": {"grid": ["linear"]}},
    )
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    killed: list[tuple[str, int]] = []

    def kill_after_the_first_evaluation() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            experiment = client.get_experiment_by_name("test_study")
            found = experiment and client.search_runs([experiment.experiment_id], "tags.`mgm.kind` = 'trial'")
            tags = found[0].data.tags if found else {}
            step = int(tags.get("mgm.last_step", 0))
            if step >= 250 and "mgm.trial_process" in tags:
                where = tags["mgm.trial_process"]
                os.kill(int(where.rsplit(":", 1)[1]), signal.SIGKILL)
                killed.append((where, step))
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_the_first_evaluation, daemon=True)
    killer.start()
    outcome = run_sweep(spec, storage=str(tmp_path / "ray"), verbose=0)
    killer.join(timeout=5)
    assert killed and killed[0][1] < 2000, "the trial was not killed mid-training"
    assert outcome.statuses == {"finished": 1}
    _, _, (child,) = runs("test_study")
    assert child.data.tags["mgm.trial_process"] != killed[0][0]  # a new process finished the trial
    evaluations = [m.step for m in client.get_metric_history(child.info.run_id, "kl/nfe-2")]
    assert evaluations == list(range(250, 2001, 250))
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "loss")]
    assert sorted(steps) == list(range(1, 2001))


def test_two_ray_train_workers_train_a_jvp_objective_data_parallel(mlflow_env, tmp_path):
    """`resources.workers: 2` takes the `train` executor (auto): a TorchTrainer with two CPU workers, each on half of
    the batch, gradients all-reduced; rank 0 evaluates, checkpoints and reports."""
    spec = study(
        tmp_path,
        base={**BASE, "objective": {"name": "lsd"}, "resources": {"workers": 2, "cpus_per_worker": 0.9}},
        search={"algorithm": "grid"},
        space={"objective.diagonal_fraction": {"grid": [0.25]}},
    )
    outcome = run_sweep(spec, storage=str(tmp_path / "ray"), verbose=0)
    assert outcome.statuses == {"finished": 1}
    client, _, (child,) = runs("test_study")
    assert child.data.params["resources.workers"] == "2" and child.data.params["objective.name"] == "lsd"
    assert child.data.tags["mgm.device"] == "cpu"  # rank 0's device, sent with its results (no GPU assigned)
    assert [m.step for m in client.get_metric_history(child.info.run_id, "kl/nfe-2")] == [20, 40, 60]
    assert len(client.get_metric_history(child.info.run_id, "loss/offdiagonal")) == 60
    assert "checkpoints/final.pt" in [a.path for a in client.list_artifacts(child.info.run_id, "checkpoints")]
    assert (tmp_path / "ray" / outcome.sweep).is_dir()


def test_a_multi_objective_optuna_sweep_repeats_each_configuration_over_the_seeds(mlflow_env, tmp_path):
    spec = study(
        tmp_path,
        metric=["kl/nfe-1", "kl/nfe-2"],
        search={"algorithm": "optuna-nsga2", "num_samples": 2, "max_concurrent": 2, "seed": 0},
        space={"train.optimizer.lr": {"loguniform": [1.0e-4, 1.0e-2]}},
        seeds=[0, 1],
    )
    outcome = run_sweep(spec, storage=str(tmp_path / "ray"), verbose=0)
    assert outcome.statuses == {"finished": 4} and set(outcome.best) == {"kl/nfe-1", "kl/nfe-2"}
    _, _, children = runs("test_study")
    by_lr: dict[str, set[str]] = {}
    for child in children:
        by_lr.setdefault(child.data.params["train.optimizer.lr"], set()).add(child.data.params["train.seed"])
    assert list(by_lr.values()) == [{"0", "1"}, {"0", "1"}]  # two configurations, each run with both seeds
    # Its report has a Pareto front over the two configurations' means.
    from mgm_studies.cli import main

    assert main(["report", "test_study", "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    front = text.split("*Configurations by Pareto front*", 1)[1].split("\n\n", 2)[1].splitlines()[2:]
    assert len(front) == 2 and all(row.endswith(("| front |", "| dominated |")) for row in front)
    assert front[0].endswith("| front |") and "figures/pareto-front.png" in text


def test_sweep_set_reaches_every_trial_and_resources_alone_keep_the_sweep(mlflow_env, tmp_path, capsys):
    """`sweep --set` and `--cpus-per-trial` (issue 15): every child run trains and records the overridden base, with
    the device it used; a resources-only change is the same sweep (refused without --resume, resumed with it)."""
    import json

    from mgm_studies.cli import main
    from mgm_studies.studies.overrides import sweep_overrides
    from mgm_studies.studies.space import load_study_spec

    spec = study(
        tmp_path,
        search={"algorithm": "grid", "max_concurrent": 2},
        space={"interpolant.schedule": {"grid": ["linear", "trig"]}},
    )
    space, storage = str(tmp_path / "space.yaml"), str(tmp_path / "ray")
    command = ["sweep", space, "--storage", storage, "--quiet", "--set", "train.steps=7", "--cpus-per-trial", "1"]
    assert main([*command, "--keep-checkpoints", "unfinished"]) == 0

    client, parents, children = runs("test_study")
    assert len(parents) == 1 and len(children) == 2
    for child in children:
        params, tags = child.data.params, child.data.tags
        assert params["train.steps"] == "7" and params["resources.cpus_per_worker"] == "1.0"
        assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")] == list(range(1, 8))
        assert tags["mgm.device"] == "cpu" and tags["mgm.device_name"] == "cpu"  # what was used, never "auto"
        # --keep-checkpoints unfinished: a finished trial's Tune checkpoints go once its final model is in MLflow.
        assert "checkpoints/final.pt" in [a.path for a in client.list_artifacts(child.info.run_id, "checkpoints")]
        assert int(tags["mgm.checkpoints_pruned"]) >= 1
    assert list(Path(storage).rglob("checkpoint_*")) == []
    parent = parents[0].data.tags
    assert json.loads(parent["mgm.overrides"]) == ["train.steps=7", "--cpus-per-trial=1.0"]
    overridden = load_study_spec(space, sweep_overrides(["train.steps=7"], cpus_per_trial=1.0))
    assert parent["mgm.space_hash"] == overridden.space_hash() != spec.space_hash()

    same_study = ["sweep", space, "--storage", storage, "--quiet", "--set", "train.steps=7", "--cpus-per-trial", "0.5"]
    capsys.readouterr()
    assert main(same_study) == 2 and "already exists" in capsys.readouterr().err  # the same sweep: not a new one
    assert main([*same_study, "--resume"]) == 0  # finished trials stay finished; no new runs
    client, parents, again = runs("test_study")
    assert len(parents) == 1 and sorted(c.info.run_id for c in again) == sorted(c.info.run_id for c in children)
    assert json.loads(parents[0].data.tags["mgm.resources"])["cpus_per_worker"] == 0.5
