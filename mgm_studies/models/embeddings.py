"""Embeddings of a scalar time t in [0, 1] per sample: (B,) -> (B, dim)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

TimeEmbeddingKind = Literal["sinusoidal", "fourier"]


EmbeddingDim = Annotated[int, Field(ge=2, multiple_of=2)]  # a config field: cosine and sine halves


def _check_dim(dim: int) -> None:
    if dim < 2 or dim % 2:
        raise ValueError(f"embedding dim must be even and >= 2 (cosine and sine halves), got {dim}")


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer/DDPM sinusoids of `scale * t`, frequencies from 1 down to 1 / max_period (geometric).

    t in [0, 1] is multiplied by `scale` (default 1000) because these frequencies were tuned for integer-like
    diffusion step indices; without it the slowest features barely move over [0, 1].
    forward: t (B,) -> (B, dim), [cos | sin].
    """

    def __init__(self, dim: int, max_period: float = 10_000.0, scale: float = 1000.0) -> None:
        super().__init__()
        _check_dim(dim)
        half = dim // 2
        self.dim, self.scale = dim, float(scale)
        frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        # Not persistent: a deterministic function of the arguments, so checkpoints need not carry it.
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        angles = (self.scale * t).unsqueeze(-1) * self.frequencies
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class FourierTimeEmbedding(nn.Module):
    """Random Fourier features [cos(2 pi w t) | sin(2 pi w t)], w ~ N(0, sigma^2), fixed (a buffer, not trained).

    The frequencies come from their own generator seeded by `seed`, so building the module leaves the global RNG
    untouched. forward: t (B,) -> (B, dim).
    """

    def __init__(self, dim: int, sigma: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        _check_dim(dim)
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.dim = dim
        generator = torch.Generator().manual_seed(seed)
        frequencies = sigma * torch.randn(dim // 2, generator=generator)
        self.register_buffer("frequencies", frequencies)

    def forward(self, t: Tensor) -> Tensor:
        angles = 2 * math.pi * t.unsqueeze(-1) * self.frequencies
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def make_time_embedding(kind: TimeEmbeddingKind, dim: int, *, seed: int = 0) -> nn.Module:
    """A time embedding by short name; `seed` only matters for `fourier`."""
    if kind == "sinusoidal":
        return SinusoidalTimeEmbedding(dim)
    if kind == "fourier":
        return FourierTimeEmbedding(dim, seed=seed)
    raise ValueError(f"time_embedding must be 'sinusoidal' or 'fourier', got {kind!r}")
