"""Preflight: sizes that cannot fit are refused before training, naming the field; shipped configs pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import small_config

from mgm_studies.builders import build_dataset
from mgm_studies.config import RunConfig, load_run_config, parse_run_config
from mgm_studies.configbase import ConfigError
from mgm_studies.preflight import GIB, check_fits
from mgm_studies.runs import check_run
from mgm_studies.studies.space import load_study_spec

ROOT = Path(__file__).resolve().parents[1]
MACHINE = {"host": 64 * GIB, "device": 64 * GIB}  # a fixed machine, so that the tests do not depend on this one


def _refused_field(config: RunConfig, memory: dict[str, int] | None = MACHINE) -> str:
    with pytest.raises(ConfigError) as caught:
        check_fits(config, build_dataset(config), "cpu", memory=memory)
    assert len(caught.value.problems) == 1
    field, message = caught.value.problems[0]
    assert "got" in message or "GiB" in message, message
    return field


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"train": {"steps": 5, "batch_size": 1e12}}, "train.batch_size"),  # above 2**31 - 1
        ({"train": {"steps": 5, "batch_size": 1e9}}, "train.batch_size"),  # below it, but terabytes of activations
        ({"model": {"hidden": 1e8}}, "model.hidden"),
        ({"model": {"hidden": 64, "depth": 1e6}}, "model.depth"),
        ({"model": {"hidden": 64, "embedding_dim": 1e8}}, "model.embedding_dim"),
        ({"objective": {"name": "mgm", "critic_hidden": 10**8}}, "objective.critic_hidden"),
        ({"eval": {"num_samples": 1e12}}, "eval.num_samples"),
        ({"eval": {"reference_samples": 1e12}}, "eval.reference_samples"),
    ],
)
def test_absurd_sizes_are_refused_naming_the_field(sections, field):
    assert _refused_field(parse_run_config(small_config(**sections))) == field


def test_an_absurd_unet_and_fid_sample_count_are_refused():
    images = {"data": {"name": "digits"}, "eval": {"metrics": ["sw2"], "num_samples": 500}}
    wide = parse_run_config(small_config(**images, model={"name": "unet", "channels": 100_000}))
    assert _refused_field(wide) == "model.channels"
    fid = parse_run_config(
        small_config(data={"name": "digits"}, model={"name": "unet"}, eval={"metrics": ["fid"], "num_samples": 10**9})
    )
    assert _refused_field(fid) == "eval.num_samples"  # FID keeps every image: that part still scales


def test_a_plausible_large_config_passes_even_on_a_small_machine():
    config = parse_run_config(small_config(model={"hidden": 1024, "depth": 8}, train={"steps": 5, "batch_size": 4096}))
    terms = check_fits(config, build_dataset(config), "cpu", memory={"host": 4 * GIB, "device": 4 * GIB})
    assert sum(t.bytes for t in terms) < 2 * GIB


def _shipped() -> list[tuple[str, RunConfig]]:
    configs = [(p.name, load_run_config(p)) for p in sorted((ROOT / "configs").glob("*.yaml"))]
    for path in sorted([*(ROOT / "search_spaces").glob("*.yaml"), *(ROOT / "search_spaces" / "claims").glob("*.yaml")]):
        base = load_study_spec(path).base
        configs.append((path.name, base if isinstance(base, RunConfig) else parse_run_config(base)))
    return configs


def test_every_shipped_config_and_search_space_base_fits_this_machine():
    shipped = _shipped()
    assert len(shipped) >= 10
    for name, config in shipped:
        if config.resources.gpus_per_worker > 0:  # GPU-sized: its share of one 80 GB GPU (H100/A100-80GB)
            share = config.resources.gpus_per_worker * 80 * GIB
            terms = check_fits(config, build_dataset(config), "cuda", memory={"host": 24 * GIB, "device": share})
            assert sum(t.bytes for t in terms if t.where == "device") < share, name
            continue
        terms = check_fits(config, build_dataset(config), "cpu")  # this machine's memory
        assert sum(t.bytes for t in terms) < 2 * GIB, name


def test_build_run_refuses_before_any_teacher_or_objective():
    config = parse_run_config(small_config(train={"steps": 5, "batch_size": 10**9}))
    with pytest.raises(ConfigError) as caught:
        check_run(config)
    assert caught.value.problems[0][0] == "train.batch_size"


def test_the_cli_refuses_an_absurd_batch_before_any_mlflow_run(mlflow_env):
    (mlflow_env / "run.yaml").write_text(yaml.safe_dump(small_config()))
    done = subprocess.run(
        [sys.executable, "-m", "mgm_studies", "train", "run.yaml", "--set", "train.batch_size=1000000000000"],
        cwd=mlflow_env,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert done.returncode == 2, done.stderr
    assert "train.batch_size" in done.stderr and "Traceback" not in done.stderr
    assert not (mlflow_env / "checkpoints").exists()
    if (mlflow_env / "mlflow.db").exists():  # the store may be created (its schema), but holds no run
        from mlflow.tracking import MlflowClient

        client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert not experiments or client.search_runs(experiments) == []
