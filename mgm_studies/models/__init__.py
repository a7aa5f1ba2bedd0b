"""Networks: time embeddings, a velocity MLP v(t, x), a two-time MLP u(s, t, x) and a one-step generator G(z)."""

from mgm_studies.models.embeddings import (
    FourierTimeEmbedding,
    SinusoidalTimeEmbedding,
    TimeEmbeddingKind,
    make_time_embedding,
)
from mgm_studies.models.mlp import GeneratorMLP, TwoTimeMLP, VelocityMLP

__all__ = [
    "FourierTimeEmbedding",
    "GeneratorMLP",
    "SinusoidalTimeEmbedding",
    "TimeEmbeddingKind",
    "TwoTimeMLP",
    "VelocityMLP",
    "make_time_embedding",
]
