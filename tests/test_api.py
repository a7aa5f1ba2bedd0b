"""The Python API (issue 16): `results()` equals the report's results.parquet row for row, `load_model().sample()`
equals what `mgm-studies sample` writes, value for value; bad input fails early, naming what was wrong. Real MLflow
(SQLite), and a real small sweep (real Ray) for the study tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

import mgm_studies
from mgm_studies import evaluation
from mgm_studies.cli import main
from mgm_studies.configbase import ConfigError
from mgm_studies.reporting.collect import TrackingUnreachable
from mgm_studies.studies.space import parse_study_spec
from mgm_studies.studies.sweep import run_sweep

STUDY = "api_study"
SPACE = {
    "name": STUDY,
    "base": {
        "data": {"name": "checkerboard"},
        "model": {"hidden": 16, "depth": 2, "embedding_dim": 8},
        "train": {"steps": 30, "batch_size": 64, "checkpoint_interval": 30, "ema_decays": [0.9], "log_interval": 10},
        "eval": {"metrics": ["kl"], "steps": [1, 2], "num_samples": 500, "reference_samples": 500, "interval": 30},
    },
    "metric": "kl/nfe-2",
    "mode": "min",
    "search": {"algorithm": "grid", "max_concurrent": 2},
    "space": {"model.hidden": {"grid": [16, 32]}},
    "seeds": [0],
}
TINY_IMAGES = {
    "data": {"name": "digits", "size": 8},
    "model": {"name": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [4]},
    "train": {"steps": 2, "batch_size": 16, "checkpoint_interval": 2, "ema_decays": [0.9]},
    "eval": {"metrics": ["sw2"], "steps": [1], "num_samples": 64, "interval": 0},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory, ray_cluster) -> dict[str, str]:
    """Two sweeps of the study: `first` (2 trials, model.hidden 16 and 32), then `newest` (1 trial, another seed)."""
    root = tmp_path_factory.mktemp("api")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MGM_STUDIES_CHECKPOINTS")}
    os.environ["MLFLOW_TRACKING_URI"], os.environ["MGM_STUDIES_CHECKPOINTS"] = uri, str(root / "checkpoints")
    try:
        sweeps = {}
        for name, fields in (("first", {}), ("newest", {"seeds": [1], "space": {"model.hidden": {"grid": [16]}}})):
            space, path = {**SPACE, **fields}, root / f"{name}.yaml"
            path.write_text(yaml.safe_dump(space))
            spec = parse_study_spec(space, source=path)
            outcome = run_sweep(spec, storage=str(root / "ray"), verbose=0)
            assert outcome.statuses == {"finished": 2 if name == "first" else 1}
            sweeps[name] = outcome.parent_run_id
        yield {"uri": uri, **sweeps}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _finished_trial(store: dict[str, str]) -> str:
    frame = mgm_studies.results(STUDY, sweep=store["first"], tracking_uri=store["uri"])
    return str(frame.loc[frame["status"] == "finished", "run_id"].iloc[0])


def _written_samples(run_id: str, out: Path, *, steps: int, n: int, seed: int) -> torch.Tensor:
    """What `mgm-studies sample` writes, read back as (n, *shape)."""
    args = ["sample", run_id, "--steps", str(steps), "--num-samples", str(n), "--seed", str(seed), "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    table = pq.read_table(out)
    if table.column_names == ["image"]:
        shape = [int(s) for s in table.schema.metadata[b"shape"].decode().split(",")]
        return torch.tensor(table.column("image").combine_chunks().flatten().to_numpy()).reshape(n, *shape)
    return torch.tensor(table.to_pandas().to_numpy())


def test_importing_the_package_imports_neither_torch_nor_mlflow_nor_ray():
    code = (
        "import sys, mgm_studies; heavy = [m for m in ('torch', 'mlflow', 'ray', 'pandas') if m in sys.modules]; "
        "assert not heavy, heavy; assert {'results', 'load_model', 'Model'} <= set(dir(mgm_studies))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert mgm_studies.results is mgm_studies.api.results and mgm_studies.load_model is mgm_studies.api.load_model
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = mgm_studies.no_such_name


@pytest.mark.slow
def test_results_equal_the_reports_results_parquet_row_for_row(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    assert main(["report", STUDY, "--sweep", store["first"], "--out", str(tmp_path / "report")]) == 0
    written = pd.read_parquet(tmp_path / "report" / "results.parquet")
    frame = mgm_studies.results(STUDY, sweep=store["first"], tracking_uri=store["uri"])
    pd.testing.assert_frame_equal(frame, written)
    assert len(frame) == 2 and set(frame["model.hidden"]) == {16, 32} and frame["kl/nfe-2"].notna().all()
    assert set(frame["sweep_run_id"]) == set(frame["parent_run_id"]) == {store["first"]}


@pytest.mark.slow
def test_results_read_the_newest_sweep_unless_given_one(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])  # the CLI's store, without tracking_uri=
    newest = mgm_studies.results(STUDY)
    assert list(newest["sweep_run_id"]) == [store["newest"]] and list(newest["train.seed"]) == [1]
    first = mgm_studies.results(STUDY, store["first"])
    assert list(first["sweep_run_id"]) == [store["first"]] * 2 and list(first["train.seed"]) == [0, 0]
    assert list(newest.columns) == list(first.columns)


@pytest.mark.slow
def test_load_model_samples_what_the_sample_command_writes(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.setattr(evaluation, "SAMPLE_CHUNK", 32)  # 100 samples in chunks of 32, 32 and 36, in both
    run_id = _finished_trial(store)
    model = mgm_studies.load_model(run_id)
    assert isinstance(model, mgm_studies.Model) and model.run_id == run_id
    assert model.shape == (2,) and model.step == 30 and model.ema == 0.9 and model.device == torch.device("cpu")
    samples = model.sample(100, steps=3, seed=7)
    assert samples.shape == (100, 2) and samples.dtype == torch.float32
    assert torch.equal(samples, _written_samples(run_id, tmp_path / "x.parquet", steps=3, n=100, seed=7))
    assert torch.equal(samples, model.sample(100, steps=3, seed=7))
    assert not torch.equal(samples, model.sample(100, steps=3, seed=8))
    raw = mgm_studies.load_model(run_id, ema="raw", tracking_uri=store["uri"])
    assert raw.ema is None and not torch.equal(raw.sample(100, steps=3, seed=7), samples)
    assert torch.equal(mgm_studies.load_model(run_id, ema=0.9).sample(5, steps=1), model.sample(5, steps=1))


def test_an_image_model_samples_what_the_sample_command_writes(mlflow_env, capsys):
    (mlflow_env / "images.yaml").write_text(yaml.safe_dump(TINY_IMAGES))
    assert main(["train", "images.yaml", "--quiet"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    model = mgm_studies.load_model(run_id)
    samples = model.sample(20, steps=2, seed=3)
    assert model.shape == (1, 8, 8) and samples.shape == (20, 1, 8, 8)
    assert torch.equal(samples, _written_samples(run_id, mlflow_env / "x.parquet", steps=2, n=20, seed=3))
    with pytest.raises(ConfigError, match=r"ema: .*decay 0\.5"):
        mgm_studies.load_model(run_id, ema=0.5)  # not a decay the run tracked
    with pytest.raises(ValueError, match="steps must be >= 1"):
        model.sample(4, steps=0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        model.sample(0, steps=1)


def test_bad_input_is_refused_naming_the_argument_and_the_store(mlflow_env):
    uri = os.environ["MLFLOW_TRACKING_URI"]
    with pytest.raises(TrackingUnreachable, match="no MLflow store"):
        mgm_studies.results(STUDY)  # the store does not exist yet: reading it does not create it
    with pytest.raises(ConfigError, match="run_id: no run 'abc': there is no MLflow store"):
        mgm_studies.load_model("abc")
    assert not (mlflow_env / "mlflow.db").exists()

    client = MlflowClient(uri)
    experiment = client.create_experiment("other_study")
    with pytest.raises(ConfigError, match=f"study: no study 'nope' in {uri}; its studies: .*other_study"):
        mgm_studies.results("nope")
    with pytest.raises(ConfigError, match=f"run_id: no run 'abc' in the tracking store {uri}"):
        mgm_studies.load_model("abc")
    unfinished = client.create_run(experiment).info.run_id
    with pytest.raises(ConfigError, match=f"run {unfinished} has no checkpoints/final.pt .status running"):
        mgm_studies.load_model(unfinished, tracking_uri=uri)
    with pytest.raises(ConfigError, match="ema: expected None"):
        mgm_studies.load_model(unfinished, ema="best")
    with pytest.raises(ConfigError, match="device: "):
        mgm_studies.load_model(unfinished, device="nowhere")


@pytest.mark.slow
def test_an_unknown_sweep_is_refused_naming_the_studys_sweeps(store):
    known = f"sweep: no sweep run '0+' in study '{STUDY}'; its sweeps: .*{store['first']}"
    with pytest.raises(ConfigError, match=known):
        mgm_studies.results(STUDY, sweep="0" * 32, tracking_uri=store["uri"])
    with pytest.raises(ConfigError, match=r"has no checkpoints/final\.pt"):
        mgm_studies.load_model(store["first"], tracking_uri=store["uri"])  # a sweep's parent run, not a trial
