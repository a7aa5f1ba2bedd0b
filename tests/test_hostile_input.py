"""Each class of hostile input, driven through the CLI as a user would (a subprocess): alias bombs, non-finite and
overflowing numbers, malformed `--set`, a checkpoint that would run code, a store that does not answer or is not
SQLite, and four first writers racing on a fresh store. The exit code, the field named, the time where it matters,
and that nothing was written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli
from mlflow.tracking import MlflowClient

from mgm_studies.cli import main

RUN = {
    "data": {"name": "checkerboard"},
    "model": {"hidden": 16, "depth": 2, "embedding_dim": 8},
    "train": {"steps": 10, "batch_size": 32, "log_interval": 5},
    "eval": {"metrics": ["kl"], "steps": [1], "num_samples": 200, "reference_samples": 500},
    "resources": {"device": "cpu"},
}


def _bomb(levels: int) -> str:
    """A "billion laughs" run config: `levels` levels of ten aliases each under train.seed (10^levels strings)."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ndata: {{name: checkerboard}}\ntrain: {{steps: 1, seed: *l{levels - 1}}}\n"


@pytest.fixture
def env(mlflow_env: Path) -> Path:
    (mlflow_env / "run.yaml").write_text(yaml.safe_dump(RUN))
    return mlflow_env


def _no_store(folder: Path) -> None:
    assert not (folder / "mlflow.db").exists(), "the MLflow store was written"
    assert not (folder / "checkpoints").exists() and not (folder / "mlartifacts").exists()


@pytest.mark.parametrize("levels", [6, 9])
def test_an_alias_bomb_is_refused_at_once_with_a_short_message(env, levels, capsys):
    (env / "bomb.yaml").write_text(_bomb(levels))
    assert len((env / "bomb.yaml").read_text()) < 1200  # a 1 KB file that stands for 10^9 strings
    start = time.perf_counter()
    assert main(["train", str(env / "bomb.yaml")]) == 2
    assert time.perf_counter() - start < 1.0  # it printed 2 GB and died after 86 s before
    assert "expands to more than" in capsys.readouterr().err
    if levels < 9:
        return  # the subprocesses below once for the largest bomb: the table covers the verbs in-process
    for verb in ("train", "sweep"):
        done = run_cli(verb, "bomb.yaml", cwd=env, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "refused" in done.stderr and len(done.stderr) + len(done.stdout) < 1000
    flow = "{" + ", ".join(_bomb(levels).splitlines()[:levels]) + "}"  # the same bomb on one line
    done = run_cli("train", "run.yaml", "--set", f"train.seed={flow}", cwd=env, timeout=60)
    assert done.returncode == 2 and "  --set train.seed:" in done.stderr and "refused" in done.stderr, done.stderr
    assert len(done.stderr) < 1000
    _no_store(env)


def test_non_finite_and_overflowing_numbers_are_refused_before_any_run(env):
    for override, field in (  # test_bad_input.py has every float of every section, in-process
        ("train.optimizer.lr=1e999", "train.optimizer.lr"),
        ("train.seed=12345678901234567890123", "train.seed"),
    ):
        done = run_cli("train", "run.yaml", "--set", override, cwd=env)
        assert done.returncode == 2, done.stderr
        assert f"  {field}:" in done.stderr
    _no_store(env)
    space = {
        "name": "inf_range",
        "base": RUN,
        "metric": "kl/nfe-1",
        "space": {"train.optimizer.lr": {"uniform": [1e-4, float("inf")]}},
    }
    (env / "space.yaml").write_text(yaml.safe_dump(space))
    done = run_cli("sweep", "space.yaml", cwd=env)
    assert done.returncode == 2 and "  space.train.optimizer.lr:" in done.stderr, done.stderr
    _no_store(env)
    assert not (env / "ray_results").exists()  # refused before Ray started


def test_set_errors_name_set_and_exit_2(env):
    for override, named in (("train.steps=[", "--set train.steps"), ("train.steps.x=1", "--set train.steps.x")):
        done = run_cli("train", "run.yaml", "--set", override, cwd=env)
        assert done.returncode == 2, done.stderr
        assert f"  {named}:" in done.stderr, done.stderr
    _no_store(env)


class _RunsCode:
    """A pickle payload: unpickling it creates the file `path` (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_malicious_or_broken_teacher_checkpoint_is_refused_naming_the_field(env):
    sentinel = env / "payload-ran"
    torch.save({"config": "{}", "model": _RunsCode(sentinel), "ema": {}, "step": 1}, env / "evil.pt")
    (env / "junk.pt").write_bytes(b"not a checkpoint at all")
    torch.save({"weights": torch.zeros(3)}, env / "foreign.pt")
    for name, says in (
        ("evil.pt", "pickled Python objects"),
        ("junk.pt", "not a readable torch checkpoint"),
        ("foreign.pt", "not an mgm-studies export"),
    ):
        config = {**RUN, "objective": {"name": "itvm", "teacher": {"path": name}}}
        (env / "student.yaml").write_text(yaml.safe_dump(config))
        for verb in ("validate", "train") if name == "evil.pt" else ("validate",):
            done = run_cli(verb, "student.yaml", cwd=env)
            assert done.returncode == 2, done.stderr
            assert "  objective.teacher.path:" in done.stderr and says in done.stderr, done.stderr
            assert "weights_only=False" not in done.stderr and "weights_only` set to `False" not in done.stderr
    assert not sentinel.exists(), "the checkpoint's pickled code ran"
    _no_store(env)


def test_an_unreachable_or_unusable_store_is_named_within_seconds(env):
    for uri, code, says in (
        ("http://127.0.0.1:9", 1, "does not answer"),  # the discard port: nothing listens
        ("http://someone:hunter2@127.0.0.1:9", 1, "does not answer"),
        (f"sqlite:///{env / 'run.yaml'}", 2, "is not a SQLite database"),
        (f"sqlite:///{env / 'run.yaml' / 'mlflow.db'}", 2, "is a file, not a folder"),
    ):
        start = time.perf_counter()
        done = run_cli("train", "run.yaml", "--quiet", cwd=env, env={"MLFLOW_TRACKING_URI": uri}, timeout=120)
        took = time.perf_counter() - start
        assert done.returncode == code, done.stderr
        assert "MLFLOW_TRACKING_URI" in done.stderr and says in done.stderr, done.stderr
        assert "hunter2" not in done.stderr  # credentials never printed
        assert took < 15, f"{took:.1f} s"  # MLflow alone retried for 105-249 s
    assert not (env / "checkpoints").exists()


def test_four_concurrent_first_writers_on_a_fresh_store_all_succeed(env):
    store = env / "fresh" / "mlflow.db"
    uri = f"sqlite:///{store}"
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "mgm_studies", "train", "run.yaml", "--quiet", "--set", f"train.seed={i}"],
            cwd=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        )
        for i in range(4)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    run_ids = {out.strip().splitlines()[-1] for out, _ in outputs}
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mgm-studies")
    runs = client.search_runs([experiment.experiment_id])
    assert {run.info.run_id for run in runs} == run_ids and len(run_ids) == 4
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert sorted(run.data.tags["mgm.seed"] for run in runs) == ["0", "1", "2", "3"]
