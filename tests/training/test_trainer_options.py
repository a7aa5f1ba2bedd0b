"""The GPU-path options of the Trainer (issue 6), checked on the CPU: `train.compile`, `train.channels_last` and
`train.data_on_device` change how a step runs, never what it computes."""

from __future__ import annotations

import pytest
import torch
from conftest import small_config

from mgm_studies.config import parse_run_config
from mgm_studies.configbase import ConfigError
from mgm_studies.data.images import make_image_dataset
from mgm_studies.runs import trainer_for
from mgm_studies.training.trainer import Trainer

UNET = {"name": "unet", "channels": 8, "channel_mult": [1, 2], "norm_groups": 4, "embedding_dim": 16}
DIGITS_EVAL = {"metrics": ["sw2"], "steps": [1], "num_samples": 16, "reference_samples": 16}


def _losses(config: dict, steps: int = 3) -> tuple[list[float], Trainer]:
    trainer = trainer_for(parse_run_config(config))
    losses = []
    for _ in range(steps):
        pending = trainer.train_step()
        losses.append(float(pending.values[pending.names.index("loss")]))
    return losses, trainer


def _with_train(config: dict, **options) -> dict:
    return {**config, "train": {**config["train"], **options}}


@pytest.mark.parametrize("objective", ["si", "lsd"])
def test_a_compiled_model_trains_like_the_eager_one_and_checkpoints_the_same_weights(objective):
    """lsd differentiates the network with torch.func.jvp inside the loss: that runs through the compiled forward."""
    config = small_config(objective={"name": objective}, train={"steps": 3, "batch_size": 64})
    eager, eager_trainer = _losses(config)
    compiled, compiled_trainer = _losses(_with_train(config, compile=True))
    assert compiled_trainer.train_model is not compiled_trainer.model  # the compiled wrapper was trained
    assert compiled == pytest.approx(eager, rel=1e-4)
    first, second = eager_trainer.state_dict()["model"], compiled_trainer.state_dict()["model"]
    assert first.keys() == second.keys()  # no `_orig_mod.` prefixes: checkpoints and exports load either way
    assert all(torch.allclose(first[k], second[k], atol=1e-5) for k in first)


@pytest.mark.parametrize("objective", ["si", "mgm"])
def test_channels_last_trains_a_unet_like_the_default_layout(objective):
    config = {
        "data": {"name": "digits"},
        "model": UNET,
        "objective": {"name": objective},
        "train": {"steps": 3, "batch_size": 16},
        "eval": DIGITS_EVAL,
    }
    default, _ = _losses(config)
    last, trainer = _losses(_with_train(config, channels_last=True))
    weight = next(p for p in trainer.model.parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    if objective == "mgm":  # the critic the objective builds for images is laid out the same way
        critic_weight = next(p for p in trainer.objective.critic.parameters() if p.dim() == 4 and p.shape[1] > 1)
        assert critic_weight.is_contiguous(memory_format=torch.channels_last)
    assert last == pytest.approx(default, rel=1e-4)


def test_channels_last_is_refused_for_vector_data():
    with pytest.raises(ConfigError) as error:
        parse_run_config(_with_train(small_config(), channels_last=True))
    assert "train.channels_last" in str(error.value) and "unet" in str(error.value)


def test_batches_gathered_on_the_device_are_the_batches_sample_draws():
    dataset = make_image_dataset("digits")
    first, second = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for n in (5, 64):
        assert torch.equal(dataset.sample_on(n, first, torch.device("cpu")), dataset.sample(n, second))


def test_data_on_device_does_not_change_what_the_trainer_trains_on():
    config = {
        "data": {"name": "digits"},
        "model": UNET,
        "train": {"steps": 3, "batch_size": 16},
        "eval": DIGITS_EVAL,
    }
    on_device, _ = _losses(_with_train(config, data_on_device=True))
    from_host, _ = _losses(_with_train(config, data_on_device=False))
    assert on_device == from_host
