"""FID on the NFE ladder through the Trainer's evaluation (issue 6): an `si` U-Net trained a few hundred steps on the
8x8 digits scores a lower 8-step FID than the untrained model, with the offline extractor trained once and cached."""

from __future__ import annotations

import numpy as np
import torch

from mgm_studies.config import parse_run_config
from mgm_studies.evaluation import evaluate
from mgm_studies.runs import trainer_for
from mgm_studies.training.reporter import RecordingReporter

CONFIG = {
    "data": {"name": "digits"},
    "model": {"name": "unet", "channels": 16, "channel_mult": [1, 2], "embedding_dim": 32},
    "train": {"steps": 300, "batch_size": 64, "ema_decays": [0.99], "checkpoint_interval": 300, "log_interval": 50},
    "eval": {"metrics": ["fid", "kid", "sw2"], "steps": [8], "num_samples": 600},
}


def test_training_lowers_the_8_step_fid_and_the_value_carries_its_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("MGM_STUDIES_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: two threads only contend on a shared 2-core machine
    try:
        reporter = RecordingReporter()
        trainer = trainer_for(parse_run_config(CONFIG), reporter=reporter)
        trainer.model.eval()
        before = evaluate(trainer.model, trainer.objective, trainer.dataset, trainer.config.eval, step=0,
                          device=torch.device("cpu"))  # fmt: skip
        trainer.model.train()
        assert trainer.run().status == "finished"
    finally:
        torch.set_num_threads(threads)
    after = reporter.evaluations[-1]
    print(f"fid/nfe-8: untrained {before.metrics['fid/nfe-8']:.2f}, after 300 steps {after.metrics['fid/nfe-8']:.2f}")
    assert after.metrics["fid/nfe-8"] < 0.5 * before.metrics["fid/nfe-8"]
    assert after.metrics["kid/nfe-8"] < before.metrics["kid/nfe-8"]
    # The offline extractor was trained once, on the digits, and every value says which one scored it.
    (weights,) = (tmp_path / "cache" / "extractors").glob("*.pt")
    assert after.tags == before.tags and after.tags["fid.extractor"] == "mgm-offline"
    assert after.tags["fid.num_reference"] == "1797" and after.tags["fid.num_samples"] == "600"
    assert after.tags["fid.extractor_weights"] and weights.stat().st_size > 0
    # The reference statistics and features are cached without pickles: .npz only, read with allow_pickle=False.
    features, stats = sorted((tmp_path / "cache").glob("*.npz"))  # one reference, one extractor
    assert features.name.endswith("-mgm-offline-features-feat.npz") and stats.name.endswith("-stat-fid-feat.npz")
    assert not list((tmp_path / "cache").glob("*.pt"))
    for entry in (tmp_path / "cache").glob("*.npz"):
        with np.load(entry, allow_pickle=False) as arrays:
            assert all(arrays[name].dtype.kind == "f" for name in arrays.files)


def test_train_extractor_writes_weights_logs_them_to_mlflow_and_runs_can_use_them(mlflow_env, capsys):
    import yaml
    from mlflow.tracking import MlflowClient

    from mgm_studies.cli import main
    from mgm_studies.metrics.extractor import weights_hash

    (mlflow_env / "run.yaml").write_text(yaml.safe_dump({"data": {"name": "digits"}, "train": {"steps": 1}}))
    assert main(["train-extractor", "run.yaml", "--steps", "150", "--out", "digits.pt"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    weights = mlflow_env / "digits.pt"
    assert out[-1] == str(weights) and weights.is_file()
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("mgm-studies-extractors").experiment_id])
    assert run.data.tags["mgm.weights_hash"] == weights_hash(weights) and run.info.status == "FINISHED"
    assert run.data.metrics["heldout_accuracy"] > 0.8
    assert [a.path for a in client.list_artifacts(run.info.run_id, "extractor")] == ["extractor/digits.pt"]
    # A run config names the weights (relative to the config file) and validates.
    config = {"data": {"name": "digits"}, "train": {"steps": 1}, "eval": {"fid": {"weights": "digits.pt"}}}
    (mlflow_env / "student.yaml").write_text(yaml.safe_dump(config))
    assert main(["validate", "student.yaml"]) == 0
    # Vector data has no images to train on.
    (mlflow_env / "toy.yaml").write_text(yaml.safe_dump({"data": {"name": "moons"}, "train": {"steps": 1}}))
    assert main(["train-extractor", "toy.yaml"]) == 2
    assert "  data: 'moons' is not labelled image data" in capsys.readouterr().err
