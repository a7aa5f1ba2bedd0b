"""`mgm-studies report` never deletes what it did not write, and names from users never leave their folder.

A report folder carries a marker file; an existing target without it (a user's folder, a file, a symbolic link) is
refused (exit 2, nothing written or removed) unless `--force`, which replaces a link itself, never its target. The
refusals are driven as a user runs them (`python -m mgm_studies`); the placement itself is tested on folders, and a
real report is built from a small sweep written to a real SQLite MLflow store (by hand: no Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, small_config
from mlflow.tracking import MlflowClient

from mgm_studies.cli import main
from mgm_studies.configbase import ConfigError
from mgm_studies.reporting.build import HTML, build_report
from mgm_studies.reporting.place import MARKER, is_report, place

STUDY = "safety_study"


def _files(root: Path) -> dict[str, bytes | str]:
    """Every path under `root`, links not followed: file contents, a link's target, "dir" for folders."""
    found: dict[str, bytes | str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = f"link to {os.readlink(path)}"
            elif path.is_dir():
                found[key] = "dir"
            else:
                found[key] = path.read_bytes()
    return found


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    store = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
        "MGM_STUDIES_CHECKPOINTS": str(cwd / "checkpoints"),
    }
    return run_cli(*args, cwd=cwd, env=store, timeout=120)


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """tmp/outer/{above.txt, victim/keep.txt, project/{mlflow.db, notes/keep.txt, paper/{draft.tex}, beside.txt}};
    returns the project (the working folder). The store is a sentinel file: a refusal never opens it."""
    outer = tmp_path / "outer"
    (outer / "victim").mkdir(parents=True)
    (outer / "victim" / "keep.txt").write_text("victim")
    (outer / "above.txt").write_text("above")
    project = outer / "project"
    (project / "paper").mkdir(parents=True)
    (project / "paper" / "draft.tex").write_text("my paper")
    (project / "beside.txt").write_text("beside")
    (project / "mlflow.db").write_text("not a database: must survive")
    return project


def _refused(result: subprocess.CompletedProcess, field: str, fragment: str = "") -> None:
    assert result.returncode == 2, result.stderr
    assert f"  {field}: " in result.stderr and fragment in result.stderr, result.stderr


# ---------------------------------------------------------------------- refusals, as a user runs them
@pytest.mark.parametrize("study", ["../../victim", "..", "a/b"])
def test_report_refuses_a_study_name_that_leaves_reports(world: Path, study: str) -> None:
    before = _files(world.parent)
    _refused(_cli(world, "report", study), "STUDY", "expected a name of")
    assert _files(world.parent) == before


def test_report_refuses_to_replace_a_users_folder(world: Path) -> None:
    before = _files(world.parent)
    _refused(_cli(world, "report", STUDY, "--out", "paper"), "--out", "--force")
    assert _files(world.parent) == before


def test_report_refuses_a_link_to_a_users_folder_and_leaves_its_target(world: Path) -> None:
    (world / "reports").mkdir()
    (world / "reports" / STUDY).symlink_to(world.parent / "victim")
    before = _files(world.parent)
    _refused(_cli(world, "report", STUDY), "STUDY", "symbolic link")
    assert _files(world.parent) == before


def test_train_refuses_an_experiment_outside_the_character_set(world: Path) -> None:
    (world / "run.yaml").write_text(yaml.safe_dump(small_config()))
    before = _files(world.parent)
    _refused(_cli(world, "train", "run.yaml", "--experiment", "../x"), "--experiment", "'../x'")
    assert _files(world.parent) == before


def test_sweep_refuses_a_bad_experiment_before_ray_starts(world: Path) -> None:
    space = {"name": STUDY, "base": small_config(), "metric": "kl/nfe-1", "space": {"train.steps": {"choice": [5]}}}
    (world / "space.yaml").write_text(yaml.safe_dump(space))
    before = _files(world.parent)
    start = time.monotonic()
    result = _cli(world, "sweep", "space.yaml", "--experiment", "..")
    elapsed = time.monotonic() - start
    _refused(result, "--experiment", "expected a name of")
    assert elapsed < 20, f"took {elapsed:.1f} s: refused only after Ray started?"
    assert _files(world.parent) == before  # no ray_results/, no store


def test_sweep_refuses_a_space_named_out_of_its_folder(world: Path) -> None:
    space = {"name": "../evil", "base": small_config(), "metric": "kl/nfe-1", "space": {"train.steps": {"choice": [5]}}}
    (world / "space.yaml").write_text(yaml.safe_dump(space))
    before = _files(world.parent)
    _refused(_cli(world, "sweep", "space.yaml"), "name", "'../evil'")
    assert _files(world.parent) == before


# ---------------------------------------------------------------------- placement, on folders
def _staged(parent: Path, text: str = "new") -> Path:
    staged = parent / ".staged"
    staged.mkdir()
    (staged / HTML).write_text(text)
    (staged / MARKER).write_text(json.dumps({"tool": "mgm-studies report", "study": STUDY}))
    return staged


def test_place_into_a_new_an_empty_or_a_report_folder(tmp_path: Path) -> None:
    out = tmp_path / "r"
    place(_staged(tmp_path, "one"), out, force=False)
    assert (out / HTML).read_text() == "one" and is_report(out)
    (out / "stale.png").write_text("from the old report")
    place(_staged(tmp_path, "two"), out, force=False)
    assert (out / HTML).read_text() == "two" and not (out / "stale.png").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    place(_staged(tmp_path), empty, force=False)
    assert is_report(empty)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "r"]  # no staged or old folder left behind


@pytest.mark.parametrize("kind", ["folder", "file", "garbage marker", "marker is a link"])
def test_place_refuses_what_it_did_not_write_unless_forced(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("mine")
    else:
        out.mkdir()
        (out / "mine.txt").write_text("mine")
        if kind == "garbage marker":
            (out / MARKER).write_text("not json")
        elif kind == "marker is a link":
            (tmp_path / "real-marker").write_text(json.dumps({"tool": "mgm-studies report"}))
            (out / MARKER).symlink_to(tmp_path / "real-marker")
    before = _files(tmp_path)
    staged = _staged(tmp_path)
    with pytest.raises(ConfigError) as caught:
        place(staged, out, force=False)
    assert caught.value.problems[0][0] == "--out" and "--force" in caught.value.problems[0][1]
    staged_files = {k for k in _files(tmp_path) if k.startswith(".staged")}
    assert {k: v for k, v in _files(tmp_path).items() if k not in staged_files} == before
    place(staged, out, force=True)
    assert is_report(out) and not (out / "mine.txt").exists()


@pytest.mark.parametrize("dangling", [False, True])
def test_place_never_follows_a_link(tmp_path: Path, dangling: bool) -> None:
    target = tmp_path / "users"
    if not dangling:
        target.mkdir()
        (target / "thesis.tex").write_text("years of work")
    out = tmp_path / "out"
    out.symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        place(_staged(tmp_path), out, force=False)
    assert out.is_symlink()
    place(tmp_path / ".staged", out, force=True)  # the link itself is replaced
    assert not out.is_symlink() and is_report(out)
    if not dangling:
        assert (target / "thesis.tex").read_text() == "years of work" and not (target / MARKER).exists()


def test_place_never_replaces_the_working_folder_even_forced(tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (work, tmp_path):
        with pytest.raises(ConfigError, match="working folder"):
            place(_staged(work), out, force=True)
        (work / ".staged" / HTML).unlink()
        (work / ".staged" / MARKER).unlink()
        (work / ".staged").rmdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


# ---------------------------------------------------------------------- a real report, from a real store
@pytest.fixture
def store(mlflow_env: Path) -> str:
    """A finished sweep of STUDY as `mgm-studies sweep` records it (collect.py): a parent run and 4 trials over
    `train.optimizer.lr`, written to a SQLite store with MLflow's own client."""
    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    experiment = client.create_experiment(STUDY)
    parent = client.create_run(experiment, run_name="sweep", tags={"mgm.kind": "sweep", "mgm.sweep": f"{STUDY}-0"})
    parent_id = parent.info.run_id
    params = {"swept": "train.optimizer.lr", "metric": "kl/nfe-1", "mode": "min", "seeds": "0,1"}
    for key, value in params.items():
        client.log_param(parent_id, key, value)
    for i, (lr, seed) in enumerate([(0.001, 0), (0.001, 1), (0.002, 0), (0.002, 1)]):
        tags = {
            "mgm.kind": "trial",
            "mlflow.parentRunId": parent_id,
            "mgm.status": "finished",
            "mgm.trial_id": f"t{i}",
            "mgm.trial_params": json.dumps({"train.optimizer.lr": lr, "train.seed": seed}),
        }
        run_id = client.create_run(experiment, run_name=f"trial-{i}", tags=tags).info.run_id
        client.log_param(run_id, "train.optimizer.lr", str(lr))
        client.log_param(run_id, "train.seed", str(seed))
        for step in (10, 20):
            client.log_metric(run_id, "loss", 1.0 / (step + i), step=step)
        client.log_metric(run_id, "kl/nfe-1", 0.5 + 0.1 * i, step=20)
        client.set_terminated(run_id)
    client.set_terminated(parent_id)
    return uri


def test_a_report_is_rewritten_in_place_and_force_replaces_a_users_folder(store: str, capsys) -> None:
    out = Path("reports") / STUDY
    assert main(["report", STUDY]) == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker["tool"] == "mgm-studies report" and marker["study"] == STUDY and marker["version"]
    assert (out / HTML).is_file() and is_report(out)
    assert main(["report", STUDY]) == 0  # its own report: replaced without --force
    assert is_report(out)
    user = Path("mine")
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["report", STUDY, "--out", str(user)]) == 2
    assert "--out: " in capsys.readouterr().err and (user / "notes.txt").read_text() == "mine"
    assert main(["report", STUDY, "--out", str(user), "--force"]) == 0
    assert is_report(user) and not (user / "notes.txt").exists()
    leftovers = [p.name for p in Path.cwd().iterdir() if p.name.startswith(".")]
    assert leftovers == [] and sorted(p.name for p in Path("reports").iterdir()) == [STUDY]


def test_a_refused_target_is_checked_before_the_store_is_read(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "a.txt").write_text("a")
    with pytest.raises(ConfigError) as caught:  # the store does not exist: reading it would fail otherwise
        build_report(STUDY, out=user, tracking_uri=f"sqlite:///{tmp_path / 'none.db'}", field="STUDY")
    assert caught.value.problems[0][0] == "STUDY"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user"]


def test_the_committed_example_reports_carry_the_marker() -> None:
    reports = Path(__file__).resolve().parents[2] / "reports"
    folders = [p for p in reports.iterdir() if (p / HTML).is_file()]
    assert folders and all(is_report(p) for p in folders)
