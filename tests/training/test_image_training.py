"""Every objective on images (issue 6): scikit-learn's 8x8 digits, a small U-Net, a few steps of the shared Trainer,
an evaluation on the NFE ladder with its sample grids, and the exported model loaded back."""

from __future__ import annotations

import math

import pytest
import torch

from mgm_studies.config import parse_run_config
from mgm_studies.evaluation import GRID_IMAGES
from mgm_studies.exported import load_exported, save_exported
from mgm_studies.objectives import OBJECTIVES
from mgm_studies.plots import evaluation_figures
from mgm_studies.runs import trainer_for
from mgm_studies.training.reporter import RecordingReporter

UNET = {"name": "unet", "channels": 8, "channel_mult": [1, 2], "norm_groups": 4, "embedding_dim": 16}
TRAIN = {"steps": 3, "batch_size": 8, "checkpoint_interval": 3, "log_interval": 1, "ema_decays": [0.9]}
EVAL = {"metrics": ["sw2", "mmd"], "steps": [1, 2], "num_samples": 80, "reference_samples": 80}


def digits_config(**sections) -> dict:
    return {"data": {"name": "digits"}, "model": UNET, "train": TRAIN, "eval": EVAL, **sections}


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    """A (barely trained) si teacher on the digits, for the distillation objectives."""
    trainer = trainer_for(parse_run_config(digits_config()))
    trainer.run()
    return save_exported(trainer.export(), tmp_path_factory.mktemp("teacher") / "teacher.pt")


VARIANTS = {"pfmm": [{"reference": "teacher"}, {"reference": "ema"}]}
CASES = [(name, options) for name in sorted(OBJECTIVES) for options in VARIANTS.get(name, [{}])]


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{o}" if o else n for n, o in CASES])
def test_every_objective_trains_and_evaluates_on_8x8_digits_with_a_unet(name, options, teacher_path, tmp_path):
    objective = {"name": name, **options}
    if "teacher" in OBJECTIVES[name].config.model_fields and options.get("reference") != "ema":
        objective["teacher"] = {"path": str(teacher_path)}
    reporter = RecordingReporter()
    trainer = trainer_for(parse_run_config(digits_config(objective=objective)), reporter=reporter)
    result = trainer.run()
    assert result.status == "finished" and result.step == 3
    assert all(math.isfinite(v) for scalars in reporter.scalars.values() for v in scalars.values())
    (evaluation,) = reporter.evaluations
    for k in (1, 2):
        assert math.isfinite(evaluation.metrics[f"sw2/nfe-{k}"]) and math.isfinite(evaluation.metrics[f"mmd/nfe-{k}"])
        assert evaluation.samples[k].shape == (min(GRID_IMAGES, 80), 1, 8, 8)
    assert evaluation.reference.shape[1:] == (1, 8, 8)
    grids = list(evaluation_figures(evaluation))
    assert [k for k, _ in grids] == [1, 2]
    # The exported model samples images again after a round trip through the file.
    exported = load_exported(save_exported(trainer.export(), tmp_path / "final.pt"))
    noise = exported.objective.interpolant.noise((4, 1, 8, 8), torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert exported.objective.sample(exported.model, noise, 2).x.shape == (4, 1, 8, 8)


def test_image_data_refuses_an_mlp_or_kl_and_defaults_to_a_unet(tmp_path, capsys):
    import yaml

    from mgm_studies.cli import main

    defaults = parse_run_config({"data": {"name": "digits"}, "train": {"steps": 1}})
    assert defaults.model.name == "unet" and defaults.eval.metrics == ["fid"]
    cases = [
        ({"model": {"hidden": 16}}, "model.name"),
        ({"eval": {"metrics": ["kl"]}}, "eval.metrics"),
        ({"eval": {"fid": {"weights": "missing.pt"}}}, "eval.fid.weights"),
    ]
    for section, field in cases:
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump({"data": {"name": "digits"}, "train": {"steps": 1}, **section}))
        assert main(["validate", str(path)]) == 2
        assert f"  {field}: " in capsys.readouterr().err
