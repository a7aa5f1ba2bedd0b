"""Several exponential moving averages of one model's parameters, updated together (as EDM2 tracks many)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class EMA:
    """Shadow copies of `model`'s parameters, one per decay.

    With `warmup`, the effective decay at step k is min(decay, (1 + k) / (10 + k)), so early averages do not
    remember the random initialisation for thousands of steps.
    """

    def __init__(self, model: nn.Module, decays: Sequence[float], *, warmup: bool = True) -> None:
        self.decays = [float(d) for d in decays]
        self.warmup = warmup
        params = [p.detach() for p in model.parameters()]
        self.shadows: dict[float, list[Tensor]] = {d: [p.clone() for p in params] for d in self.decays}

    def decays_at(self, step: int) -> list[float]:
        """The decay each shadow moves with at update `step` (0-based), in the order of `shadows`."""
        if not self.warmup:
            return list(self.shadows)
        return [min(decay, (1.0 + step) / (10.0 + step)) for decay in self.shadows]

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move every shadow towards the current parameters; `step` counts updates done so far (0-based)."""
        if not self.decays:
            return
        params = [p.detach() for p in model.parameters()]
        for shadow, decay in zip(self.shadows.values(), self.decays_at(step), strict=True):
            torch._foreach_lerp_(shadow, params, 1.0 - decay)

    @torch.no_grad()
    def update_by(self, model: nn.Module, weights: Sequence[Tensor]) -> None:
        """`update` with each shadow's weight 1 - decay given as a 0-d tensor on the model's device, filled by the
        caller from `decays_at`: a captured CUDA graph reads the tensor's current value, a float would stay frozen.
        shadow += w (param - shadow), the lerp written with foreach ops that take a tensor weight."""
        params = [p.detach() for p in model.parameters()]
        for shadow, weight in zip(self.shadows.values(), weights, strict=True):
            delta = torch._foreach_sub(params, shadow)
            torch._foreach_mul_(delta, weight)
            torch._foreach_add_(shadow, delta)

    @torch.no_grad()
    def restart(self, model: nn.Module) -> None:
        """Every shadow becomes a copy of `model`'s current parameters, forgetting what it averaged before."""
        params = [p.detach() for p in model.parameters()]
        for shadow in self.shadows.values():
            torch._foreach_copy_(shadow, params)

    def averaged_model(self, model: nn.Module, decay: float | None) -> nn.Module:
        """A copy of `model` in eval mode carrying the EMA weights of `decay` (the raw weights for None)."""
        averaged = copy.deepcopy(model).eval()
        if decay is not None:
            with torch.no_grad():
                for target, source in zip(averaged.parameters(), self.shadows[float(decay)], strict=True):
                    target.copy_(source)
        return averaged

    def state_dict(self) -> dict[str, list[Tensor]]:
        return {repr(d): [t.clone() for t in shadow] for d, shadow in self.shadows.items()}

    def load_state_dict(self, state: dict[str, list[Tensor]]) -> None:
        for decay, shadow in self.shadows.items():
            with torch.no_grad():
                for target, source in zip(shadow, state[repr(decay)], strict=True):
                    target.copy_(source)
