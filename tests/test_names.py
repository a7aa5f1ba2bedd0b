"""Study and experiment names: one character set (`mgm_studies/names.py`), checked wherever a name enters: a search
space's `name`, `report STUDY`, `--experiment` of `train`, `train-extractor` and `sweep`. A refused name is exit 2
naming the field, and nothing is written. And the other shared names of that module: metric names built and parsed
by one rule, and a reader of results that never imports the training stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, small_config

from mgm_studies.cli import main
from mgm_studies.configbase import ConfigError
from mgm_studies.names import MAX_NAME_LENGTH, NAME_PATTERN, area_metric, check_name, eval_metric, parse_eval_metric
from mgm_studies.studies.space import parse_study_spec

ROOT = Path(__file__).resolve().parents[1]
BAD_NAMES = {
    "empty": "",
    "dot": ".",
    "dot-dot": "..",
    "parent then name": "../x",
    "two parents": "../../victim",
    "slash": "a/b",
    "backslash": "a\\b",
    "absolute": "/abs",
    "leading space": " lead",
    "trailing newline": "name\n",
    "space inside": "name with space",
    "nul": "a\x00b",
    "tilde": "~",
    "home": "~/x",
    "dash first": "-dash-first",
    "underscore first": "_x",
    "hidden": ".hidden",
    "too long": "x" * (MAX_NAME_LENGTH + 1),
    "very long": "x" * 200,
    "non-ASCII": "étude",
    "colon": "a:b",
    "wildcard": "a*",
}
GOOD_NAMES = ["a", "7", "demo", "demo_itvm_intermediate_time", "A.b-c_9", "v1.2", "a..b", "x" * MAX_NAME_LENGTH]


def _space(name: str) -> dict:
    """A valid search space (no teacher, no files) named `name`."""
    return {
        "name": name,
        "base": small_config(),
        "metric": "kl/nfe-1",
        "space": {"train.optimizer.lr": {"choice": [1e-3, 2e-3]}},
    }


def _snapshot(root: Path) -> set[str]:
    """Every path under `root` (links not followed)."""
    return {str(Path(folder, name).relative_to(root)) for folder, dirs, files in os.walk(root) for name in dirs + files}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=list(BAD_NAMES))
def test_check_name_refuses_with_the_field_and_the_allowed_set(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_name(name, "--experiment")
    [(field, message)] = caught.value.problems
    assert field == "--experiment"
    assert NAME_PATTERN in message and "letters, digits" in message
    assert repr(name[:200]) in message


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_check_name_accepts_plain_names(name: str) -> None:
    assert check_name(name, "STUDY") == name
    assert re.fullmatch(NAME_PATTERN, name)


def test_a_long_name_is_quoted_cut_to_200_characters() -> None:
    with pytest.raises(ConfigError) as caught:
        check_name("y" * 5000, "STUDY")
    message = caught.value.problems[0][1]
    assert repr("y" * 200) in message and "5000 characters" in message and "y" * 201 not in message


def test_every_shipped_space_name_is_valid() -> None:
    for path in sorted([*(ROOT / "search_spaces").glob("*.yaml"), *(ROOT / "search_spaces" / "claims").glob("*.yaml")]):
        check_name(yaml.safe_load(path.read_text())["name"], "name")


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=list(BAD_NAMES))
def test_a_space_name_follows_the_same_set(name: str) -> None:
    assert parse_study_spec(_space("fine")).name == "fine"
    with pytest.raises(ConfigError) as caught:
        parse_study_spec(_space(name))
    fields = dict(caught.value.problems)
    assert list(fields) == ["name"]
    assert NAME_PATTERN in fields["name"]


# ---------------------------------------------------------------------- the CLI, in this process (argv may hold a NUL)
@pytest.fixture
def config_file(mlflow_env: Path) -> Path:
    path = mlflow_env / "run.yaml"
    path.write_text(yaml.safe_dump(small_config()))
    return path


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=list(BAD_NAMES))
def test_cli_refuses_a_bad_name_for_report_train_and_train_extractor(name, config_file, capsys) -> None:
    before = _snapshot(config_file.parent)
    calls = {"STUDY": ["report", "--", name], "--experiment": ["train", str(config_file), f"--experiment={name}"]}
    for field, argv in calls.items():
        assert main(argv) == 2, argv
        assert f"  {field}: expected a name of" in capsys.readouterr().err
    assert main(["train-extractor", str(config_file), f"--experiment={name}"]) == 2
    assert "  --experiment: expected a name of" in capsys.readouterr().err
    assert _snapshot(config_file.parent) == before  # no store, no checkpoints, no reports/


def test_a_bad_experiment_in_the_environment_is_refused_as_the_default(config_file, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "../x")
    assert main(["train", str(config_file)]) == 2
    assert "--experiment: expected a name of" in capsys.readouterr().err


def test_run_sweep_refuses_a_bad_experiment_before_ray_starts() -> None:
    import ray

    from mgm_studies.studies.sweep import run_sweep

    spec = parse_study_spec(_space("fine"))
    with pytest.raises(ConfigError) as caught:
        run_sweep(spec, experiment="..", storage="/nonexistent/never-written")
    assert caught.value.problems[0][0] == "--experiment"
    assert not ray.is_initialized()


# ---------------------------------------------------------------------- validate, as a user runs it
def test_validate_refuses_a_space_named_out_of_its_folder(tmp_path: Path) -> None:
    space = tmp_path / "evil.yaml"
    space.write_text(yaml.safe_dump(_space("../evil")))
    result = run_cli("validate", str(space), cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "  name: expected a name of" in result.stderr and "'../evil'" in result.stderr


# ---------------------------------------------------------------------- metric names, and a reader without torch
@pytest.mark.parametrize(("family", "k"), [("kl", 1), ("kl_paper", 16), ("fevals", 4), ("area_kl", 128)])
def test_an_eval_metric_name_parses_back_to_its_family_and_k(family: str, k: int) -> None:
    assert parse_eval_metric(eval_metric(family, k)) == (family, k)
    assert parse_eval_metric(area_metric(eval_metric(family, k))) == (f"area_{family}", k)


@pytest.mark.parametrize("name", ["loss", "mgm/divergence", "kl/nfe-", "kl/nfe-2x", "KL/nfe-2", "kl/nfe-2\n", "/nfe-1"])
def test_other_names_are_not_eval_metrics(name: str) -> None:
    assert parse_eval_metric(name) is None


def test_the_report_reads_results_without_importing_torch_or_ray() -> None:
    code = "import sys, mgm_studies.reporting.collect; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stderr
