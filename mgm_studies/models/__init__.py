"""Networks: time embeddings, a velocity MLP v(t, x) and a two-time MLP u(s, t, x)."""

from mgm_studies.models.embeddings import (
    FourierTimeEmbedding,
    SinusoidalTimeEmbedding,
    TimeEmbeddingKind,
    make_time_embedding,
)
from mgm_studies.models.mlp import TwoTimeMLP, VelocityMLP

__all__ = [
    "FourierTimeEmbedding",
    "SinusoidalTimeEmbedding",
    "TimeEmbeddingKind",
    "TwoTimeMLP",
    "VelocityMLP",
    "make_time_embedding",
]
