"""MGM's critic with random Fourier features of its input, against spectral bias (spec section 5).

With the flip, the critic's optimum E[D | Y, t] near t = 0 is (2 P(flipped | Y) - 1) Y: a density ratio resolved at
the scale of the data's thinnest structure, which an MLP on raw coordinates learns slowly. Random Fourier features
phi(y) = [sin(2 pi y B), cos(2 pi y B)], B ~ N(0, scale^2) fixed (Tancik et al. 2020), give it high frequencies.

The features feed a branch added to a base critic: f(t, y) = base(t, y) + branch(t, phi(y)). The branch's last layer
starts at zero, so the critic starts as its base exactly (with MGM's warm-up, a copy of the denoiser).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mgm_studies.models.embeddings import SinusoidalTimeEmbedding
from mgm_studies.models.mlp import _batch_times, _trunk

_EMBEDDING = 64


class FourierFeatureBranch(nn.Module):
    """branch(t, phi(y)) for vectors. forward(t: (B,), y: (B, dim)) -> (B, dim); zero at initialisation.

    Args:
        dim: the data dimension.
        features: number of frequencies (rows of B); the branch sees 2 * features features plus the time's.
        scale: standard deviation of B's entries, in cycles per unit of the data.
        hidden, depth: the branch's MLP.
        seed: B's draw, independent of the global RNG, so a resumed or copied critic has the same frequencies.
    """

    def __init__(self, dim: int, *, features: int, scale: float, hidden: int, depth: int, seed: int = 0) -> None:
        super().__init__()
        if features < 1 or scale <= 0:
            raise ValueError(f"features must be >= 1 and scale > 0, got {features} and {scale}")
        draw = torch.randn(dim, features, generator=torch.Generator().manual_seed(seed)) * scale
        self.register_buffer("frequencies", 2 * math.pi * draw)  # persistent: checkpoints carry the draw
        self.time_net = nn.Sequential(SinusoidalTimeEmbedding(_EMBEDDING), nn.Linear(_EMBEDDING, hidden), nn.SiLU())
        self.trunk = _trunk(2 * features + hidden, dim, hidden, depth, "silu")
        last = self.trunk[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        angles = y @ self.frequencies.to(y.dtype)
        features = torch.cat([torch.sin(angles), torch.cos(angles), self.time_net(_batch_times(t, y))], dim=-1)
        return self.trunk(features)


class FourierFeatureCritic(nn.Module):
    """f(t, y) = base(t, y) + branch(t, phi(y)). forward(t: (B,), y: (B, dim)) -> (B, dim)."""

    def __init__(self, base: nn.Module, branch: FourierFeatureBranch) -> None:
        super().__init__()
        self.base, self.branch = base, branch

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.base(t, y) + self.branch(t, y)
