"""A learned per-(s, t) loss weight: the uncertainty weighting of EDM2, as the flow-map paper uses it.

With w(s, t) a small network, each sample's loss L becomes exp(-w(s, t)) L + w(s, t) (arXiv 2505.18825, following
EDM2, arXiv 2312.02696, whose network outputs it as `logvar`). For a fixed model the optimal w is log E[L | s, t]:
the weighted loss balances the time pairs by their own loss scale, and the + w term keeps w from running off.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mgm_studies.models.embeddings import SinusoidalTimeEmbedding


class LossWeight(nn.Module):
    """w(s, t): forward(s: (B,), t: (B,)) -> (B,), the log of the loss scale expected at the time pair.

    Sinusoidal embeddings of s and t - s (as the two-time models' default `time_pair: s_gap`), one hidden SiLU layer,
    a linear read-out initialised at zero: w = 0 at the start, where the weighted loss equals the unweighted one.
    """

    def __init__(self, embedding_dim: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.embed_first = SinusoidalTimeEmbedding(embedding_dim)
        self.embed_gap = SinusoidalTimeEmbedding(embedding_dim)
        self.net = nn.Sequential(nn.Linear(2 * embedding_dim, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        embedded = torch.cat([self.embed_first(s), self.embed_gap(t - s)], dim=-1)
        return self.net(embedded).squeeze(-1)


def weighted_loss(loss: Tensor, log_weight: Tensor) -> Tensor:
    """exp(-w) L + w per sample; loss, log_weight: (B,) -> (B,). Gradients reach both the model (through L) and w.

    L is the squared residual summed over the D data dimensions. EDM2 weighs each dimension, e^-w L + D w: D times this
    loss at w + log D, up to a constant, so the two differ by a factor D in the gradients (and so under clipping).
    """
    return torch.exp(-log_weight) * loss + log_weight
