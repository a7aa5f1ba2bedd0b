"""ODE samplers for a velocity field v(t, x): Euler and Heun on a uniform grid from t0 = 0 (noise) to t1 = 1 (data).

Every sampler returns the number of velocity evaluations it made (NFE), which the evaluation ladder logs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]
"""(t (B,), x (B, *data_shape)) -> velocity (B, *data_shape)."""


@dataclass(frozen=True)
class SampleResult:
    """x: (B, *data_shape) final samples; nfe: number of function (network) evaluations spent on them."""

    x: Tensor
    nfe: int


def _grid(num_steps: int, t0: float, t1: float) -> list[float]:
    """num_steps + 1 uniform times; computed as t0 + (t1 - t0) k / N so the last one is exactly t1."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return [t0 + (t1 - t0) * k / num_steps for k in range(num_steps + 1)]


def _times(t: float, x: Tensor) -> Tensor:
    """The scalar time t as a (B,) tensor matching x's batch, dtype and device."""
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


@torch.no_grad()
def euler(velocity: VelocityFn, x0: Tensor, num_steps: int, *, t0: float = 0.0, t1: float = 1.0) -> SampleResult:
    """Explicit Euler: x <- x + h v(t_k, x). Global error O(h); NFE = num_steps.

    x0: (B, *data_shape) at time t0. Returns the state at t1.
    """
    x = x0
    for t_now, t_next in itertools.pairwise(_grid(num_steps, t0, t1)):
        x = x + (t_next - t_now) * velocity(_times(t_now, x), x)
    return SampleResult(x=x, nfe=num_steps)


@torch.no_grad()
def heun(velocity: VelocityFn, x0: Tensor, num_steps: int, *, t0: float = 0.0, t1: float = 1.0) -> SampleResult:
    """Heun's method (explicit trapezoidal rule): an Euler predictor, then the average of the two slopes.

    x_pred = x + h v(t_k, x);  x <- x + h / 2 (v(t_k, x) + v(t_{k+1}, x_pred)). Global error O(h^2).
    The corrector runs on every step, the last included (it evaluates v at t1), so NFE = 2 * num_steps.
    x0: (B, *data_shape) at time t0. Returns the state at t1.
    """
    x = x0
    for t_now, t_next in itertools.pairwise(_grid(num_steps, t0, t1)):
        h = t_next - t_now
        slope = velocity(_times(t_now, x), x)
        predicted = x + h * slope
        x = x + 0.5 * h * (slope + velocity(_times(t_next, x), predicted))
    return SampleResult(x=x, nfe=2 * num_steps)


SAMPLERS: dict[str, Callable[..., SampleResult]] = {"euler": euler, "heun": heun}
