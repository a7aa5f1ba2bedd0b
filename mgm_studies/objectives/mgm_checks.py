"""MGM's collapse detector: an estimate of the midpoint divergence that the trained critic cannot fool.

The trained critic's own estimate E ||f(Y, t)||^2 goes to 0 both when the laws match and when the critic has
collapsed (f = 0 and the generator gets no signal, which stalled MGM on new data). So at every evaluation a fresh
critic, of the trained one's architecture and re-initialised, is fitted for `collapse_check_steps` Adam steps against
the frozen generator on fresh data draws; on a held-out batch, E[2 <f, D> - ||f||^2] estimates a lower bound of the
divergence (the variational form: any f gives at most E ||E[D | Y]||^2, with equality at the optimum). Logged:
- `mgm/divergence_critic`: the trained critic's estimate on the held-out batch;
- `mgm/divergence_refit`: the fresh critic's lower bound; `mgm/critic_r2`: the trained critic's R^2 against the
  displacement;
- tag `mgm.critic_collapse`: "true" when the trained critic reports less than COLLAPSE_RATIO of what the refit finds
  and the refit finds more than NOISE_FLOOR (a warning line too), else "false".
"""

from __future__ import annotations

import copy
import sys
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from mgm_studies.objectives.mgm import MidpointGenerativeModel

COLLAPSE_RATIO = 0.25
NOISE_FLOOR = 1e-3
BATCH = 512
HELD_OUT = 4096
LR = 1e-3


def _fresh(critic: nn.Module, generator: torch.Generator) -> nn.Module:
    """A copy of `critic` with every layer re-initialised (under a seed drawn from `generator`)."""
    fresh = copy.deepcopy(critic)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh.requires_grad_(True).train()


def _draw(objective: MidpointGenerativeModel, model: nn.Module, dataset, n: int, generator, device) -> tuple:
    """(t, Y, D) of n fresh data draws against the frozen generator; drawn on the CPU (the generator's device)."""
    x_data = dataset.reference(n, generator).float()
    with torch.no_grad():
        z = objective.interpolant.noise(tuple(x_data.shape), generator)
        draw = objective.observe(x_data, model(z.to(device)).float().cpu(), generator)
    return draw.t.to(device), draw.y.to(device), draw.displacement.to(device)


def collapse_check(
    objective: MidpointGenerativeModel,
    model: nn.Module,
    dataset,
    generator: torch.Generator,
    device: torch.device,
    steps: int,
) -> tuple[dict[str, float], dict[str, str]]:
    """Fit a fresh critic against `model` (the evaluated generator) for `steps` steps; compare with the trained one."""
    critic = objective.critic
    if critic is None or steps == 0:
        return {}, {}
    fresh = _fresh(critic, generator)
    optimizer = torch.optim.Adam(fresh.parameters(), lr=LR)
    with torch.enable_grad():
        for _ in range(steps):
            t, y, displacement = _draw(objective, model, dataset, BATCH, generator, device)
            loss = (fresh(t, y) - displacement).square().flatten(1).sum(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    t, y, displacement = _draw(objective, model, dataset, HELD_OUT, generator, device)
    with torch.no_grad():
        trained, refit = critic(t, y), fresh(t, y)
    metrics = {
        "mgm/divergence_critic": _energy(trained),
        "mgm/divergence_refit": _lower_bound(refit, displacement),
        "mgm/critic_r2": _r2(trained, displacement),
    }
    collapsed = metrics["mgm/divergence_refit"] > NOISE_FLOOR and (
        metrics["mgm/divergence_critic"] < COLLAPSE_RATIO * metrics["mgm/divergence_refit"]
    )
    if collapsed:
        print(
            f"warning: mgm's critic reports a divergence of {metrics['mgm/divergence_critic']:.3g} where a fresh "
            f"critic fitted for {steps} steps finds {metrics['mgm/divergence_refit']:.3g}: the critic has collapsed "
            "and the generator gets little signal (tag mgm.critic_collapse)",
            file=sys.stderr,
        )
    return metrics, {"mgm.critic_collapse": str(collapsed).lower()}


def _lower_bound(f: Tensor, displacement: Tensor) -> float:
    """E[2 <f, D> - ||f||^2] on held-out draws: an unbiased estimate of a lower bound of the divergence for any f
    fitted on other draws (||f||^2 alone would count an overfitted critic's noise as divergence)."""
    return float((2 * f * displacement - f.square()).float().flatten(1).sum(dim=1).mean())


def _energy(f: Tensor) -> float:
    return float(f.float().square().flatten(1).sum(dim=1).mean())


def _r2(f: Tensor, target: Tensor) -> float:
    residual = (target - f).float().square().sum()
    total = (target - target.mean(dim=0)).float().square().sum()
    return float(1 - residual / total) if total > 0 else float("nan")
