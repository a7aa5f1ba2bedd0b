"""Every objective in the registry, the same checks (issue 3): one optimiser step of each of its phases on a tiny
batch gives a finite per-sample loss whose gradient reaches every trainable parameter of that phase's network, and
never the teacher or an EMA target network.

A new objective joins these tests by being registered: nothing here names one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mgm_studies.builders import build_model
from mgm_studies.interpolants import Interpolant
from mgm_studies.models import MLPConfig, VelocityMLP
from mgm_studies.objectives import OBJECTIVES, build_objective

DIM, BATCH = 2, 16
TINY = MLPConfig(hidden=16, depth=2, embedding_dim=8)


def _config(name: str, options: dict):
    config_class = OBJECTIVES[name].config
    teacher = {"teacher": {"path": "teacher.pt"}} if "teacher" in config_class.model_fields else {}
    try:  # the registry's configs differ in what they require: a teacher where the objective distils one
        return config_class(name=name, **teacher, **options)
    except ValueError:
        return config_class(name=name, **options)


# Options that change which networks take part: every other name runs with its defaults.
VARIANTS = {"pfmm": [{"reference": "teacher"}, {"reference": "ema"}], "mgm": [{"critic_hidden": 16, "critic_depth": 2}]}
CASES = [(name, options) for name in sorted(OBJECTIVES) for options in VARIANTS.get(name, [{}])]


def _frozen_networks(objective) -> list[nn.Module]:
    """What the objective holds that must never be trained: its teacher and any EMA target network."""
    frozen = [objective.teacher] if isinstance(objective.teacher, nn.Module) else []
    target = getattr(objective, "target", None)
    if target is not None and target.attached:
        frozen.append(target.network)
    return frozen


@pytest.mark.parametrize(("name", "options"), CASES)
def test_every_phase_gives_a_finite_loss_with_gradients_on_its_network_only(name, options):
    torch.manual_seed(0)
    config = _config(name, options)
    # Left trainable on purpose: the objective itself must keep gradients out of the teacher.
    teacher = VelocityMLP(DIM, hidden=16, depth=2, embedding_dim=8)
    uses_teacher = getattr(config, "teacher", None) is not None
    objective = build_objective(config, Interpolant("linear", "none"), teacher if uses_teacher else None)
    model = build_model(TINY, DIM, objective.model_kind)
    objective.attach(model, DIM)
    networks = {"model": model, **objective.networks()}
    # Warm-ups and schedules may skip a phase early on: take every phase seen at the first and a late step.
    phases = dict.fromkeys(objective.phases(0) + objective.phases(10**6))
    assert set(phases) == set(networks), "every phase has a network and every owned network a phase"
    generator = torch.Generator().manual_seed(1)
    for phase in phases:
        for network in networks.values():
            network.zero_grad(set_to_none=True)
        output = objective.loss(phase, model, torch.randn(BATCH, DIM), generator)
        assert output.loss.shape == (BATCH,) and torch.isfinite(output.loss).all(), phase
        assert all(not v.requires_grad and v.dim() == 0 and torch.isfinite(v) for v in output.diagnostics.values())
        output.loss.mean().backward()
        for param_name, param in networks[phase].named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, (phase, param_name)
        for frozen in _frozen_networks(objective):
            assert all(p.grad is None for p in frozen.parameters()), phase
        objective.after_step(model, phase, 0)
