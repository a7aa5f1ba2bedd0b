"""Bad input: each malformed config exits 2 with a message naming the field, and writes nothing to MLflow."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import small_config

from mgm_studies.cli import main
from mgm_studies.config import load_run_config, parse_run_config
from mgm_studies.configbase import ConfigError
from mgm_studies.loading import flatten
from mgm_studies.yaml_input import apply_overrides


def _write_data_files(root: Path) -> None:
    nan = np.random.default_rng(0).normal(size=(50, 2))
    nan[7, 1] = np.nan
    np.save(root / "with_nan.npy", nan)
    np.save(root / "three_d.npy", np.zeros((4, 2, 2)))
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "label": ["a", "b", "c"]}), root / "strings.parquet")


def _with(path: str, value) -> dict:
    """small_config with one dotted key set (or removed when value is ...)."""
    config = copy.deepcopy(small_config())
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return config


# What test_bad_input.py's table leaves out: bad data files, data that a metric cannot use, the vp end at t = 1.
BAD_CONFIGS = {
    "NaN in data": (_with("data", {"name": "file", "path": "with_nan.npy"}), "data.path"),
    "3-D array": (_with("data", {"name": "file", "path": "three_d.npy"}), "data.path"),
    "non-numeric column": (_with("data", {"name": "file", "path": "strings.parquet"}), "data."),
    "vp touching t = 1": (_with("interpolant", {"schedule": "vp"}), "objective.time_law.t_eps"),
    "KL on 3-D data": (_with("data", {"name": "gaussian", "mean": [0, 0, 0]}), "eval.metrics"),
    "covariance not positive definite": (
        _with("data", {"name": "gaussian", "mean": [0, 0], "cov": [[1, 2], [2, 1]]}),
        "data.cov",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exits_2_names_the_field_and_writes_nothing(case, mlflow_env, capsys):
    _write_data_files(mlflow_env)
    config, field = BAD_CONFIGS[case]
    path = mlflow_env / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    for verb in ("validate", "train"):
        assert main([verb, str(path)]) == 2
        err = capsys.readouterr().err
        assert f"  {field}" in err, err
    assert not (mlflow_env / "mlflow.db").exists()
    assert not (mlflow_env / "checkpoints").exists()


def test_the_console_script_exits_2_on_bad_input(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_with("train.optimizer", {"lr": -1})))
    done = subprocess.run(
        [sys.executable, "-m", "mgm_studies", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2
    assert "train.optimizer.lr" in done.stderr and "greater than 0" in done.stderr


def test_a_good_config_validates(tmp_path, capsys):
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(small_config()))
    assert main(["validate", str(path)]) == 0
    assert "valid run config" in capsys.readouterr().out


def test_overrides_and_relative_data_paths(tmp_path):
    np.save(tmp_path / "points.npy", np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_with("data", {"name": "file", "path": "points.npy"})))
    config = load_run_config(path, ["train.optimizer.lr=3e-4", "eval.steps=[1, 2]"])
    assert config.data.path == str(tmp_path / "points.npy")
    assert config.train.optimizer.lr == 3e-4 and config.eval.steps == [1, 2]
    with pytest.raises(ConfigError, match=r"expected dotted\.key=value"):
        apply_overrides({}, ["train.steps"])


def test_images_set_the_number_of_steps_and_flatten_names_every_field():
    config = parse_run_config({**small_config(), "train": {"images": 1000, "batch_size": 300}})
    assert config.train.num_steps == 4
    params = flatten(config)
    assert params["train.images"] == "1000" and params["objective.name"] == "si"
    assert params["eval.steps"] == "[1, 4]"


def test_config_hash_ignores_the_run_name_only():
    a = parse_run_config({**small_config(), "name": "a"})
    b = parse_run_config({**small_config(), "name": "b"})
    c = parse_run_config(_with("train.seed", 3))
    assert a.config_hash() == b.config_hash() != c.config_hash()


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("configs/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path, mlflow_env, capsys):
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_the_two_time_embedding_pair_reaches_the_model():
    from mgm_studies.builders import build_model

    config = parse_run_config({**small_config(), "model": {"hidden": 16, "time_pair": "s_t"}})
    assert build_model(config.model, 2, "two_time").time_pair == "s_t"
    assert build_model(parse_run_config(small_config()).model, 2, "two_time").time_pair == "s_gap"
