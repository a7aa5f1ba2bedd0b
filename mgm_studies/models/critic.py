"""MGM's critic with random Fourier features of its input, against spectral bias (spec section 5).

With the flip, the critic's optimum E[D | Y, t] near t = 0 is (2 P(flipped | Y) - 1) Y: a density ratio resolved at
the scale of the data's thinnest structure, which an MLP on raw coordinates learns slowly. Random Fourier features
phi(y) = [sin(2 pi y B), cos(2 pi y B)], B ~ N(0, scale^2) fixed (Tancik et al. 2020), give it high frequencies.

The features enter the first layer of a velocity MLP critic: its first pre-activation becomes
W0 [y, e(t)] + b0 + W_phi phi(y), with W_phi starting at zero, so the critic starts as the MLP exactly (with MGM's
warm-up, a copy of the denoiser). One matrix product more per call: the critic's cost barely changes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mgm_studies.models.mlp import VelocityMLP, _batch_times


class FourierFeatureCritic(nn.Module):
    """f(t, y): `base` (a VelocityMLP) with `features` random Fourier features of y added to its first layer.

    forward(t: (B,), y: (B, dim)) -> (B, dim). `base` keeps its own parameter names, so a denoiser's state dict loads
    into it. The frequencies are a seeded draw (independent of the global RNG) saved in the state dict.
    """

    def __init__(self, base: VelocityMLP, *, features: int, scale: float, seed: int = 0) -> None:
        super().__init__()
        if features < 1 or scale <= 0:
            raise ValueError(f"features must be >= 1 and scale > 0, got {features} and {scale}")
        self.base = base
        draw = torch.randn(base.dim, features, generator=torch.Generator().manual_seed(seed)) * scale
        self.register_buffer("frequencies", 2 * math.pi * draw)  # persistent: checkpoints carry the draw
        first = base.trunk[0]
        self.fourier = nn.Linear(2 * features, first.out_features, bias=False)
        nn.init.zeros_(self.fourier.weight)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        base = self.base
        angles = y @ self.frequencies.to(y.dtype)
        inputs = torch.cat([y, base.time_net(_batch_times(t, y))], dim=-1)
        hidden = base.trunk[0](inputs) + self.fourier(torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1))
        return base.trunk[1:](hidden)
