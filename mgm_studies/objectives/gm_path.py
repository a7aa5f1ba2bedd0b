"""The CondOT conditional path of generator matching and its conditional jump generator (spec section 6; arXiv
2410.20587, the "jump" example of its section on Markov generators).

Per data dimension, p_t(x | z) = N(x; t z, (1 - t)^2), with z the data point. In the standardised coordinate
u = (x - t z) / (1 - t), the spec's k_t(x) = x^2 - (1 + t) x z - (1 - t)^2 + t z^2 is (1 - t)^2 (u^2 - z u - 1), so

- d/dt log p_t(x | z) = -k_t(x) / (1 - t)^3 (differentiate the log density);
- the rate lambda_t(x | z) = [k_t(x)]_+ / (1 - t)^3 = [u^2 - z u - 1]_+ / (1 - t);
- the jump law J_t(y | z), proportional to [-k_t(y)]_+ N(y; t z, (1 - t)^2), is in u proportional to
  [1 + z u - u^2]_+ phi(u): supported between the roots u_-, u_+ = (z -/+ sqrt(z^2 + 4)) / 2, with the primitive
  G(u) = (u - z) phi(u) (G'(u) = (1 + z u - u^2) phi(u)), so its normaliser is G(u_+) - G(u_-) > 0 in closed form.

The forward equation d/dt p = (integral of lambda p) J - lambda p holds because the integral of k p is zero (p keeps
unit mass), so the integrals of [k]_+ p and [-k]_+ p agree. `tests/objectives/test_gm.py` checks it on a grid (its
`conditional_density` and `jump_density` are the closed forms above).
Every function is elementwise: x, y, z and t broadcast against one another (t as (B, 1, ...) against (B, *shape)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _phi(u: Tensor) -> Tensor:
    return _INV_SQRT_2PI * torch.exp(-0.5 * u.square())


def standardise(x: Tensor, z: Tensor, t: Tensor) -> Tensor:
    """u = (x - t z) / (1 - t): x in units of the conditional standard deviation around the conditional mean."""
    return (x - t * z) / (1 - t)


def conditional_rate(x: Tensor, z: Tensor, t: Tensor) -> Tensor:
    """lambda_t(x | z) = [k_t(x)]_+ / (1 - t)^3 = [u^2 - z u - 1]_+ / (1 - t): the rate of leaving x."""
    u = standardise(x, z, t)
    return (u.square() - z * u - 1).clamp(min=0) / (1 - t)


def _roots(z: Tensor) -> tuple[Tensor, Tensor]:
    """u_- < 0 < u_+, the roots of u^2 - z u - 1: the jump law lives between them."""
    half = 0.5 * torch.sqrt(z.square() + 4)
    return 0.5 * z - half, 0.5 * z + half


def _primitive(u: Tensor, z: Tensor) -> Tensor:
    """G(u) = (u - z) phi(u), a primitive of (1 + z u - u^2) phi(u)."""
    return (u - z) * _phi(u)


@dataclass(frozen=True)
class JumpBins:
    """`count` equal bins partitioning [low, high]: where the discretised jump law puts its mass.

    The target masses (`masses`) are the exact integrals of J_t(. | z) over the bins, with the tails below `low` and
    above `high` folded into the first and last bin, so the law is normalised whatever z and t are. A sampled jump
    (`sample`) picks a bin, then a point uniform inside it: the model's jump law is a piecewise-constant density,
    which, unlike bin centres, puts no atoms on a grid that an evaluation histogram would alias with.
    """

    low: float
    high: float
    count: int

    def __post_init__(self) -> None:
        if self.count < 2:
            raise ValueError(f"a jump law needs at least 2 bins, got {self.count}")
        if not self.low < self.high:
            raise ValueError(f"the bins' range needs low < high, got [{self.low}, {self.high}]")

    @property
    def width(self) -> float:
        return (self.high - self.low) / self.count

    def edges(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
        """The count + 1 bin edges, low to high."""
        return torch.linspace(self.low, self.high, self.count + 1, dtype=dtype, device=device)

    def masses(self, z: Tensor, t: Tensor) -> Tensor:
        """The discretised target jump law: z (B, *shape), t broadcastable to it -> (B, count, *shape), summing to 1
        over dim 1, the layout of the jump-law logits."""
        z, t = z.unsqueeze(1), t.unsqueeze(1)  # bins go on dim 1
        edges = self.edges(z.dtype, z.device).view(1, -1, *[1] * (z.dim() - 2))
        low, high = _roots(z)
        u = torch.maximum(torch.minimum(standardise(edges, z, t), high), low)  # G is flat outside [u_-, u_+]
        # Fold the tails into the end bins: the outer edges sit at -inf and +inf, clipped to the roots.
        shape = list(u.shape)
        shape[1] = 1
        u = torch.cat([low.expand(shape), u[:, 1:-1], high.expand(shape)], dim=1)
        cumulative = _primitive(u, z)
        masses = (cumulative[:, 1:] - cumulative[:, :-1]).clamp(min=0)  # G increases on [u_-, u_+]: only rounding
        return masses / masses.sum(dim=1, keepdim=True)

    def sample(self, logits: Tensor, generator: torch.Generator) -> Tensor:
        """One jump target per entry: logits (B, count, *shape) -> values (B, *shape) in [low, high]. A bin by the
        inverse CDF of softmax(logits) over dim 1, then a uniform point inside it."""
        cdf = torch.softmax(logits.float(), dim=1).cumsum(dim=1)
        shape = (logits.shape[0], *logits.shape[2:])
        u = torch.rand(shape, generator=generator, device=logits.device).unsqueeze(1) * cdf[:, -1:]
        index = (cdf < u).sum(dim=1).clamp(max=self.count - 1)
        offset = torch.rand(shape, generator=generator, device=logits.device)
        return self.low + (index.to(offset.dtype) + offset) * self.width
