"""End to end through the real CLI and a real SQLite MLflow store: train, evaluate, sample, interrupt, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import run_cli, small_config
from mlflow.tracking import MlflowClient

from mgm_studies.config import parse_run_config
from mgm_studies.runs import trainer_for


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.mark.slow
def test_train_evaluate_sample_end_to_end(mlflow_env):
    config = small_config(
        model={"hidden": 128, "depth": 3, "embedding_dim": 32},
        train={
            "steps": 1500,
            "batch_size": 256,
            "checkpoint_interval": 500,
            "ema_decays": [0.99],
            "optimizer": {"lr": 2e-3},
        },
        eval={"metrics": ["kl", "sw2", "mmd"], "steps": [1, 8], "num_samples": 5000, "interval": 750},
    )
    (mlflow_env / "run.yaml").write_text(yaml.safe_dump(config))
    done = run_cli("train", "run.yaml", "--quiet", cwd=mlflow_env)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mgm.status"] == "finished"
    assert run.data.params["objective.name"] == "si" and run.data.params["train.steps"] == "1500"
    assert {"mgm.seed", "mgm.code_version", "mgm.torch_version", "mgm.ray_version"} <= set(run.data.tags)
    device = run.data.tags["mgm.device"]  # the device used, with its index and name: never "auto"
    assert device == "cpu" or device.startswith("cuda:"), device
    assert run.data.tags["mgm.device_name"] and (device != "cpu" or run.data.tags["mgm.device_name"] == "cpu")
    for key in ("kl/nfe-1", "kl/nfe-8", "sw2/nfe-8", "mmd/nfe-8", "loss", "train/steps_per_s"):
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(run_id, "loss")) == 1500
    assert [m.step for m in client.get_metric_history(run_id, "kl/nfe-8")] == [750, 1500]
    artifacts = _artifacts(client, run_id)
    assert {"config.json", "checkpoints/final.pt", "plots/step-000001500/nfe-8.png"} <= artifacts

    # Training clearly helped: compare with the same network before its first step.
    untrained = trainer_for(parse_run_config(config)).run_evaluation().metrics["kl/nfe-8"]
    trained = run.data.metrics["kl/nfe-8"]
    assert trained < 0.5 * untrained, (trained, untrained)

    done = run_cli("evaluate", run_id, "--steps", "2,4", "--num-samples", "3000", cwd=mlflow_env)
    assert done.returncode == 0, done.stderr
    assert "kl/nfe-4" in done.stdout
    assert "kl/nfe-2" in client.get_run(run_id).data.metrics

    done = run_cli(
        "sample", run_id, "--steps", "8", "--num-samples", "1000", "--out", "samples.parquet", cwd=mlflow_env
    )
    assert done.returncode == 0, done.stderr
    table = pq.read_table(mlflow_env / "samples.parquet")
    assert table.column_names == ["x0", "x1"] and table.num_rows == 1000
    samples = torch.tensor(table.to_pandas().to_numpy())
    assert samples.abs().max() < 6 and samples.std(0).min() > 1.0  # spread over the [-4, 4]^2 board

    assert run_cli("evaluate", "no-such-run", cwd=mlflow_env).returncode == 2
    from mgm_studies.cli import main

    assert main(["evaluate", run_id, "--ema", "0.5"]) == 2  # not a tracked decay
    assert main(["evaluate", run_id, "--steps", "0,2"]) == 2
    assert main(["sample", run_id, "--steps", "0", "--num-samples", "5", "--out", "x.parquet"]) == 2
    assert main(["sample", run_id, "--steps", "2", "--num-samples", "5", "--out", "x.csv"]) == 2
    assert not (mlflow_env / "x.parquet").exists() and not (mlflow_env / "x.csv").exists()


@pytest.mark.slow
def test_an_interrupted_cli_run_resumes_to_the_uninterrupted_weights(mlflow_env):
    config = small_config(
        train={"steps": 3000, "batch_size": 64, "checkpoint_interval": 100, "ema_decays": [0.99]},
        eval={"metrics": ["sw2"], "steps": [1], "num_samples": 200},
    )
    (mlflow_env / "run.yaml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "mgm_studies", "train", "run.yaml", "--quiet"],
        cwd=mlflow_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not list((mlflow_env / "checkpoints").glob("*/ckpt-*.pt")) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "mgm-studies train --resume" in err
    run_id = out.strip().splitlines()[-1]
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["mgm.status"] == "interrupted"

    # Checkpoints that went missing are an error, not a silent restart from step 0.
    from mgm_studies.cli import main

    (mlflow_env / "checkpoints").rename(mlflow_env / "moved")
    assert main(["train", "--resume", run_id, "--quiet"]) == 2
    (mlflow_env / "moved").rename(mlflow_env / "checkpoints")

    done = run_cli("train", "--resume", run_id, "--quiet", cwd=mlflow_env)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr
    assert client.get_run(run_id).info.status == "FINISHED"
    assert run_cli("train", "--resume", run_id, cwd=mlflow_env).returncode == 2  # already finished

    final = client.download_artifacts(run_id, "checkpoints/final.pt", str(mlflow_env))
    resumed = torch.load(final, weights_only=True)["model"]
    reference = trainer_for(parse_run_config(config))
    reference.run()
    for name, tensor in reference.model.state_dict().items():
        assert torch.equal(tensor, resumed[name]), name


def test_a_diverging_run_is_recorded_as_diverged_with_its_step(mlflow_env, capsys):
    from mgm_studies.cli import main

    config = small_config(train={"steps": 300, "batch_size": 64, "grad_clip": None, "optimizer": {"lr": 1e12}})
    (mlflow_env / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "run.yaml", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "diverged" in captured.err
    run_id = captured.out.strip().splitlines()[-1]
    run = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["mgm.status"] == "diverged"
    step = int(run.data.tags["mgm.diverged_step"])
    assert 1 <= step < 300
    assert "checkpoints/final.pt" not in _artifacts(MlflowClient(os.environ["MLFLOW_TRACKING_URI"]), run_id)


def test_validate_checks_a_search_space_and_names_the_bad_axis(tmp_path, capsys):
    from mgm_studies.cli import main

    good = Path(__file__).resolve().parent.parent / "search_spaces" / "demo.yaml"
    assert main(["validate", str(good)]) == 0
    assert "valid search space 'demo_itvm_intermediate_time'" in capsys.readouterr().out
    bad = {
        "name": "bad",
        "base": str(good.parent.parent / "configs" / "eight_gaussians_mgm.yaml"),
        "metric": "kl/nfe-1",
        "space": {"objective.flip_probability": {"uniform": [0.1, 1.5]}},
    }
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["validate", str(tmp_path / "bad.yaml")]) == 2
    assert "space.objective.flip_probability" in capsys.readouterr().err


def test_a_sweep_whose_trial_cannot_fit_on_this_machine_is_refused_before_anything_is_written(mlflow_env, capsys):
    from mgm_studies.cli import main

    space = {
        "name": "too_big",
        "base": small_config(resources={"workers": 64}),
        "metric": "kl/nfe-1",
        "search": {"algorithm": "grid"},
        "space": {"interpolant.schedule": {"grid": ["linear"]}},
    }
    (mlflow_env / "space.yaml").write_text(yaml.safe_dump(space))
    assert main(["sweep", "space.yaml"]) == 2
    assert "resources: a trial needs 64.01 CPU" in capsys.readouterr().err
    assert not (mlflow_env / "mlflow.db").exists() and not (mlflow_env / "ray_results").exists()


def test_sample_streams_in_chunks_and_refuses_an_unwritable_out_or_an_unstorable_count(mlflow_env, capsys, monkeypatch):
    from mgm_studies import evaluation
    from mgm_studies.cli import main

    config = small_config(
        train={"steps": 30, "batch_size": 64, "checkpoint_interval": 30, "ema_decays": [0.9]},
        eval={"metrics": ["kl"], "steps": [1], "num_samples": 200, "reference_samples": 2000},
    )
    (mlflow_env / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "run.yaml", "--quiet"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]

    sample = ["sample", run_id, "--steps", "2", "--num-samples", "1000", "--seed", "3"]
    assert main([*sample, "--out", "whole.parquet"]) == 0
    monkeypatch.setattr(evaluation, "SAMPLE_CHUNK", 64)  # 1000 samples in 16 chunks, one row group each
    assert main([*sample, "--out", "nested/chunked.parquet"]) == 0
    chunked = pq.ParquetFile(mlflow_env / "nested" / "chunked.parquet")
    assert chunked.metadata.num_rows == 1000 and chunked.metadata.num_row_groups == 16
    assert chunked.read().equals(pq.read_table(mlflow_env / "whole.parquet"))  # the same seed, the same samples
    capsys.readouterr()

    (mlflow_env / "file.txt").write_text("a file, not a folder")
    assert main([*sample, "--out", "file.txt/x.parquet"]) == 2  # refused before the model is loaded
    assert "--out" in capsys.readouterr().err
    assert main(["sample", run_id, "--steps", "2", "--num-samples", str(10**15), "--out", "huge.parquet"]) == 2
    assert "--num-samples" in capsys.readouterr().err
    assert not (mlflow_env / "huge.parquet").exists()
    leftovers = [p.name for p in mlflow_env.rglob("*.tmp")]
    assert leftovers == []  # the temporary file of a refused or failed sample is removed
