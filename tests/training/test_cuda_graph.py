"""`train.cuda_graphs` (training/cuda_graph.py), checked on the CPU: the static step (static batch buffer, tensor
learning rate, tensor EMA weights, gradients zeroed in place) run uncaptured trains like the eager step, checkpoints and
resumes; configs it cannot serve are refused naming the field. The capture itself needs a GPU:
benchmarks/gpu_fast_path.py."""

from __future__ import annotations

import pytest
import torch
from conftest import small_config

from mgm_studies.builders import build_dataset, build_parts
from mgm_studies.config import parse_run_config
from mgm_studies.configbase import ConfigError
from mgm_studies.models import VelocityMLP
from mgm_studies.objectives import OBJECTIVES
from mgm_studies.runs import trainer_for
from mgm_studies.training.checkpoint import load_checkpoint, save_checkpoint
from mgm_studies.training.cuda_graph import ELIGIBLE, REFUSED
from mgm_studies.training.trainer import Trainer

STEPS = 8
# Settings that change what the step captures, as cases of their own: the learned loss weight trains a second module
# under the same optimiser; pfmm's `ema` reference moves a target network in after_step.
CASES = {
    **{name: (name, {}) for name in ELIGIBLE},
    "lsd learned_weight": ("lsd", {"learned_weight": True}),
    "pfmm reference ema": ("pfmm", {"reference": "ema"}),
}


def _config(name: str, options: dict | None = None, **train):
    objective = {"name": name, **(options or {})}
    if "teacher" in OBJECTIVES[name].config.model_fields and objective.get("reference") != "ema" and name != "mgm":
        objective["teacher"] = {"path": "unused.pt"}  # replaced by an in-memory teacher in `_trainer`
    # A schedule that moves every step, so that a learning rate the static step failed to refresh shows.
    schedule = {"name": "cosine", "warmup_steps": 3}
    train = {"steps": 2 * STEPS, "batch_size": 64, "ema_decays": [0.9, 0.99], "lr_schedule": schedule, **train}
    return parse_run_config(small_config(objective=objective, train=train))


def _trainer(config, *, static: bool) -> Trainer:
    """A Trainer on the CPU; `static`: its steps go through the CUDA-graph step's code, uncaptured."""
    dataset = build_dataset(config)
    torch.manual_seed(0)
    teacher = VelocityMLP(dataset.dim, hidden=32, depth=2).requires_grad_(False).eval()
    trainer = Trainer(config, build_parts(config, dataset, teacher))
    if static:
        trainer.static_step = trainer.make_static_step(capture=False)
    return trainer


def _steps(trainer: Trainer, n: int) -> tuple[list[str], torch.Tensor]:
    pending = [trainer.train_step() for _ in range(n)]
    return pending[0].names, torch.stack([torch.stack(p.values) for p in pending])


def _state(trainer: Trainer) -> list[torch.Tensor]:
    """Everything a step moves: weights, every EMA, and the objective's own (ITVM's and pfmm's target network)."""
    shadows = [t for shadow in trainer.ema.shadows.values() for t in shadow]
    objective = [t for t in trainer.objective.state_dict().get("target", {}).values()]
    return [*trainer.model.parameters(), *shadows, *objective]


def test_every_objective_is_either_eligible_or_refused_with_a_reason():
    assert set(ELIGIBLE) | set(REFUSED) == set(OBJECTIVES)
    assert not set(ELIGIBLE) & set(REFUSED)
    assert all(reason.strip() for reason in (*ELIGIBLE.values(), *REFUSED.values()))


@pytest.mark.parametrize("case", list(CASES))
def test_the_static_step_trains_like_the_eager_step(case):
    """Same seed, same batches and noise: the same losses, diagnostics, weights and EMAs to float rounding (the
    differences measured here are below 2e-6 relative on the values and 1e-7 on the weights)."""
    name, options = CASES[case]
    config = _config(name, options)
    eager, static = _trainer(config, static=False), _trainer(config, static=True)
    eager_names, eager_values = _steps(eager, STEPS)
    static_names, static_values = _steps(static, STEPS)
    assert static_names == eager_names
    torch.testing.assert_close(static_values, eager_values, rtol=1e-5, atol=1e-6)
    for a, b in zip(_state(static), _state(eager), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert static.step == eager.step == STEPS


def test_a_static_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    """The checkpoint holds the optimiser's tensor learning rate; loading it into a trainer that already stepped
    replaces the optimiser's state, and the static step prepares itself again around the new tensors."""
    config = _config("itvm")
    reference = _trainer(config, static=True)
    _, reference_values = _steps(reference, 2 * STEPS)

    first = _trainer(config, static=True)
    _steps(first, STEPS)
    path = save_checkpoint(tmp_path, first.step, first.state_dict())
    assert isinstance(first.state_dict()["optimizers"]["model"]["param_groups"][0]["lr"], torch.Tensor)

    resumed = _trainer(config, static=True)
    _steps(resumed, 2)  # prepared and stepped: the load must replace all of it
    resumed.load_state(load_checkpoint(path))
    _, resumed_values = _steps(resumed, STEPS)
    assert torch.equal(resumed_values, reference_values[STEPS:])
    assert all(torch.equal(a, b) for a, b in zip(_state(resumed), _state(reference), strict=True))


def test_an_eager_checkpoint_resumes_on_the_static_step(tmp_path):
    """An eager checkpoint (float learning rate, no gradients yet) continues on the static step as eagerly."""
    config = _config("lsd")
    eager = _trainer(config, static=False)
    _steps(eager, STEPS)
    path = save_checkpoint(tmp_path, eager.step, eager.state_dict())
    _, eager_values = _steps(eager, STEPS)
    static = _trainer(config, static=True)
    static.load_state(load_checkpoint(path))
    _, static_values = _steps(static, STEPS)
    torch.testing.assert_close(static_values, eager_values, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("objective", "train", "resources", "expected"),
    [
        ({"name": "mgm"}, {}, {}, "two phases"),
        ({"name": "lsd", "max_gap": 0.1, "max_gap_anneal": 0.5}, {}, {}, "max_gap_anneal"),
        ({"name": "si"}, {"precision": "bfloat16"}, {}, "float32"),
        ({"name": "si"}, {"compile": True}, {}, "train.compile"),
        ({"name": "si"}, {}, {"workers": 2}, "one worker"),
        ({"name": "si"}, {}, {"device": "cpu"}, "CUDA"),
    ],
)
def test_configs_the_static_step_cannot_serve_are_refused_naming_the_field(objective, train, resources, expected):
    config = small_config(objective=objective, resources=resources)
    config["train"] = {**config["train"], "cuda_graphs": True, **train}
    with pytest.raises(ConfigError) as error:
        parse_run_config(config)
    fields = {field: message for field, message in error.value.problems}
    assert expected in fields["train.cuda_graphs"]


def test_cuda_graphs_on_a_cpu_device_is_refused_when_the_trainer_is_built():
    config = _config("si", cuda_graphs=True)  # resources.device auto: valid until the run lands on a CPU
    with pytest.raises(ConfigError, match=r"train\.cuda_graphs: .*needs a CUDA device; this run trains on cpu"):
        trainer_for(config, device="cpu")


def test_the_static_step_refuses_an_objective_with_two_phases_even_past_the_config():
    trainer = trainer_for(_config("mgm", {"denoiser_steps": 1}, ema_decays=[0.9]))
    with pytest.raises(ConfigError, match=r"train\.cuda_graphs: objective 'mgm' has more than one phase"):
        trainer.make_static_step(capture=False)
