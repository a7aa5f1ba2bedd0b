"""A one-step generator that is a denoiser at a fixed time: G(z) = scale_x z + scale_v v(time, z).

MGM's recipe (spec section 5) initialises its generator from a denoiser trained first: for a path
x_t = alpha(t) x0 + beta(t) x1 and a velocity v = alpha'(t) x0 + beta'(t) x1, the data prediction is
x1 = (alpha' x - alpha v) / (alpha' beta - alpha beta'), linear in x and v; at the noise end (time 0) the input z is
the path's x0 itself. Keeping the velocity network inside the generator lets its weights start as the denoiser's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DenoisingGenerator(nn.Module):
    """G(z) = scale_x z + scale_v velocity(time, z). forward(z: (B, *data_shape)) -> (B, *data_shape)."""

    def __init__(self, velocity: nn.Module, *, time: float, scale_x: float, scale_v: float) -> None:
        super().__init__()
        self.velocity = velocity
        self.time, self.scale_x, self.scale_v = float(time), float(scale_x), float(scale_v)

    def forward(self, z: Tensor) -> Tensor:
        t = torch.full((), self.time, device=z.device, dtype=z.dtype)  # one time: the velocity embeds it once
        return self.scale_x * z + self.scale_v * self.velocity(t, z)
