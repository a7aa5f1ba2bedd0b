"""Samplers of a generator-matching model (spec section 6): Euler for jumps, the flow + jump superposition, and the
mixed sampler (Heun on the flow part, Euler jumps).

The superposition with weight a runs the generator a * L_flow + (1 - a) * L_jump: the velocity is scaled by a, the
rate by 1 - a; both parts carry the same marginal path, so any a in [0, 1] does (a = 1: pure flow, a = 0: pure jump).
One step of size h from t: each entry jumps with probability 1 - exp(-h (1 - a) lambda(t, x)) to a draw of the
model's jump law, and otherwise takes the flow step. The model sees t clamped to <= t_max < 1.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mgm_studies.objectives.gm_path import JumpBins
from mgm_studies.sampling import SampleResult


@dataclass(frozen=True)
class GeneratorHeads:
    """The model's generator at (t, x), each (B, *data_shape) except `logits` (B, bins, *data_shape); a part the
    objective has no head for is None. `rate` is already non-negative (softplus of the rate head)."""

    velocity: Tensor | None
    rate: Tensor | None
    logits: Tensor | None


GeneratorField = Callable[[Tensor, Tensor], GeneratorHeads]
"""(t (B,), x (B, *data_shape)) -> the model's heads there."""


def sampling_generator(seed: int, x0: Tensor) -> torch.Generator:
    """A generator on x0's device seeded by `seed` and a fingerprint of x0 (its shape and first entries): the same
    noise gives the same samples, and the chunks evaluation samples in draw different jump noise."""
    head = x0.detach().flatten()[:16].double().cpu().numpy().tobytes()
    digest = hashlib.sha256(repr((seed, tuple(x0.shape))).encode() + head).digest()
    return torch.Generator(device=x0.device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _times(t: float, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


def _jump(
    x: Tensor, heads: GeneratorHeads, h: float, weight: float, bins: JumpBins | None, generator: torch.Generator
) -> Tensor:
    """Where each entry jumps to in a step of size h, or x itself where it does not: (B, *data_shape)."""
    if weight == 1.0 or heads.rate is None or bins is None:
        return x
    probability = -torch.expm1(-h * (1.0 - weight) * heads.rate)  # 1 - exp(-h lambda), accurate for small h lambda
    jumped = torch.rand(x.shape, generator=generator, device=x.device) < probability
    return torch.where(jumped, bins.sample(heads.logits, generator).to(x.dtype), x)


@torch.no_grad()
def superposition(
    field: GeneratorField,
    x0: Tensor,
    num_steps: int,
    *,
    weight: float,
    bins: JumpBins | None,
    generator: torch.Generator,
    heun: bool = False,
    t_max: float = 1.0,
    t1: float = 1.0,
) -> SampleResult:
    """Carry x0 (B, *data_shape) from t = 0 to t = t1 in `num_steps` uniform steps of the superposition with weight
    a = `weight`. Euler (`heun=False`): x_flow = x + h a v(t, x), NFE = num_steps. Mixed (`heun=True`): the flow part
    takes Heun's step x_flow = x + h a (v(t, x) + v(t + h, x + h a v(t, x))) / 2, NFE = 2 num_steps (num_steps when
    a = 0: nothing to correct). Entries that jump (decided from the rate at (t, x)) take the jump instead."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the superposition weight must be in [0, 1], got {weight}")
    grid = [t1 * k / num_steps for k in range(num_steps + 1)]
    x, nfe = x0, 0
    for t_now, t_next in itertools.pairwise(grid):
        h = t_next - t_now
        heads = field(_times(min(t_now, t_max), x), x)
        nfe += 1
        flow = x
        if weight > 0.0 and heads.velocity is not None:
            flow = x + h * weight * heads.velocity
            if heun:
                corrector = field(_times(min(t_next, t_max), x), flow).velocity
                flow = x + 0.5 * h * weight * (heads.velocity + corrector)
                nfe += 1
        x = _jump(flow, heads, h, weight, bins, generator)
    return SampleResult(x=x, nfe=nfe)
