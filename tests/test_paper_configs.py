"""configs/papers/: one preset per headline result. Each validates as shipped, and each trains for a few steps at a
tiny size through the real CLI (`train --set`), so a preset cannot rot unnoticed. CIFAR-10 presets train on 8x8 digits
here (no CIFAR-10 on this machine); their schema, network and objective options are the shipped ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import small_config

from mgm_studies.cli import main
from mgm_studies.config import load_run_config
from mgm_studies.studies.space import is_study_spec, load_study_spec
from mgm_studies.yaml_input import read_yaml

PAPERS = sorted((Path(__file__).parent.parent / "configs" / "papers").glob("*.yaml"))
TINY_VECTOR = ["model.hidden=16", "model.depth=2", "model.embedding_dim=8", "eval.reference_samples=500"]
TINY_IMAGE = [
    "data={name: digits, size: 8}",
    "model.channels=8",
    "model.channel_mult=[1, 2]",
    "model.num_res_blocks=1",
    "model.attention_resolutions=[4]",
    "eval.metrics=[sw2]",
]
TINY_RUN = [
    "train.batch_size=16",
    "train.steps=3",
    "train.checkpoint_interval=3",
    "eval.num_samples=500",
    "eval.steps=[1, 2]",
    "eval.interval=0",
]


def test_the_presets_are_there():
    names = {path.stem for path in PAPERS}
    for preset in ("flowmaps_checkerboard_lsd", "flowmaps_checkerboard_esd", "flowmaps_checkerboard_psd_midpoint"):
        assert preset in names
    assert {"flowmaps_cifar10_lsd", "mgm_cifar10", "gm_cifar10_superposition", "itvm_checkerboard_strategies"} <= names


@pytest.mark.parametrize("path", PAPERS, ids=lambda p: p.stem)
def test_every_preset_validates_and_says_what_it_reproduces(path):
    header = path.read_text().split("\nname:")[0]
    assert "arXiv" in header and "Published" in header and "differ" in header, "the header names paper, number, gaps"
    assert "GPU-hours" in header or "Time:" in header
    if is_study_spec(read_yaml(path)):
        load_study_spec(path)
    else:
        config = load_run_config(path)  # the schema and the cross-field rules; CIFAR-10 itself is not here
        assert config.train.num_steps >= 100_000  # a paper's budget, not a smoke test's


def _tiny_si_teacher(folder: Path) -> Path:
    teacher = small_config(train={"steps": 5, "batch_size": 64, "checkpoint_interval": 5, "ema_decays": [0.9]})
    teacher["eval"] = {"metrics": ["sw2"], "steps": [1], "num_samples": 200}
    path = folder / "teacher.yaml"
    path.write_text(yaml.safe_dump(teacher))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("path", PAPERS, ids=lambda p: p.stem)
def test_every_preset_trains_at_a_tiny_size(path, mlflow_env, capsys):
    data = read_yaml(path)
    if is_study_spec(data):  # a space: its base with the first value of each axis, distilling a tiny teacher
        study = load_study_spec(path)
        config = dict(study.base)
        for key, axis in study.space.items():
            assert "." not in key, "this test sets whole sections"
            config[key] = axis.grid[0]
        config["objective"] = {**config["objective"], "teacher": {"config": str(_tiny_si_teacher(mlflow_env))}}
        path = mlflow_env / "base.yaml"
        path.write_text(yaml.safe_dump(config))
    image = data.get("data", {}).get("name") == "cifar10"
    overrides = (TINY_IMAGE if image else TINY_VECTOR) + TINY_RUN
    if "lr_schedule" in data.get("train", {}) and data["train"]["lr_schedule"].get("name") == "sqrt":
        overrides.append("train.lr_schedule.decay_start=1")
    if data.get("objective", {}).get("name") == "mgm":
        overrides += ["objective.denoiser_steps=1", "objective.collapse_check_steps=2"]  # the check's 200 critic steps
    args = ["train", str(path), "--quiet"] + [item for override in overrides for item in ("--set", override)]
    assert main(args) == 0, capsys.readouterr().err
