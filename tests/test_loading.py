"""Loading: a file name means the same in a run config and in a sweep, and the data sections build their data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mgm_studies.builders import build_dataset
from mgm_studies.config import load_run_config, parse_run_config
from mgm_studies.data import DATASETS, IMAGE_DATA
from mgm_studies.loading import PATH_FIELDS
from mgm_studies.studies.space import load_study_spec

BASE = {
    "data": {"name": "checkerboard"},
    "model": {"hidden": 16, "depth": 2, "embedding_dim": 8},
    "train": {"steps": 5, "batch_size": 32},
    "eval": {"metrics": ["sw2"], "steps": [1], "num_samples": 100, "reference_samples": 200},
}
# One base per path field, naming a file relative to the folder the base is written in.
SETTING = {
    "data.path": {"data": {"name": "file", "path": "files/points.npy"}},
    "objective.teacher.path": {"objective": {"name": "lmd", "teacher": {"path": "files/teacher.pt"}}},
    "objective.teacher.config": {"objective": {"name": "lmd", "teacher": {"config": "files/teacher.yaml"}}},
    "eval.fid.weights": {"eval": {**BASE["eval"], "fid": {"weights": "files/extractor.pt"}}},
}


def _get(node, field: str):
    for part in field.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def test_every_path_field_has_a_case() -> None:
    assert set(SETTING) == set(PATH_FIELDS) and "eval.fid.weights" in PATH_FIELDS


@pytest.mark.parametrize("field", PATH_FIELDS)
def test_a_sweep_base_resolves_a_path_field_as_a_run_config_does(
    field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, files = tmp_path / "configs", tmp_path / "configs" / "files"
    files.mkdir(parents=True)
    np.save(files / "points.npy", np.random.default_rng(0).normal(size=(64, 2)))
    (files / "teacher.pt").write_bytes(b"")
    (files / "extractor.pt").write_bytes(b"")
    (files / "teacher.yaml").write_text(yaml.safe_dump(BASE))
    base = {**BASE, **SETTING[field]}
    (folder / "run.yaml").write_text(yaml.safe_dump(base))
    space = {"name": "paths", "metric": "sw2/nfe-1", "space": {"train.optimizer.lr": {"choice": [1e-3, 2e-3]}}}
    (tmp_path / "by_file.yaml").write_text(yaml.safe_dump({**space, "base": "configs/run.yaml"}))
    (folder / "inline.yaml").write_text(yaml.safe_dump({**space, "base": base}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a name left relative would be looked up here

    wanted = _get(load_run_config(folder / "run.yaml"), field)
    assert wanted == str(folder / _get(base, field))
    for space_file in (tmp_path / "by_file.yaml", folder / "inline.yaml"):
        spec = load_study_spec(space_file)
        assert _get(parse_run_config(spec.base), field) == wanted
        assert _get(spec.trial_config(spec.default_params(), 0), field) == wanted


@pytest.mark.parametrize("name", ["checkerboard", "gaussian", "file", "digits"])
def test_a_data_section_is_registered_by_name_and_builds_that_data_set(name: str, tmp_path: Path) -> None:
    data = {"name": name}
    if name == "file":
        np.save(tmp_path / "points.npy", np.random.default_rng(0).normal(size=(64, 3)))
        data["path"] = str(tmp_path / "points.npy")
    run = {**BASE, "data": data}
    if name in IMAGE_DATA:  # a U-Net and FID, the image defaults
        run = {key: value for key, value in run.items() if key not in ("model", "eval")}
    config = parse_run_config(run)
    assert isinstance(config.data, DATASETS[name]) and build_dataset(config).name == name


def test_image_data_is_named_by_the_image_sections() -> None:
    assert set(IMAGE_DATA) == {"digits", "mnist", "fashion_mnist", "cifar10", "image_folder"}
