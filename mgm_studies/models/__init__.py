"""Networks: time embeddings; MLPs (vectors) and U-Nets (images) for a velocity v(t, x), a two-time average velocity
u(s, t, x) and a one-step generator G(z)."""

from mgm_studies.models.embeddings import (
    FourierTimeEmbedding,
    SinusoidalTimeEmbedding,
    TimeEmbeddingKind,
    make_time_embedding,
)
from mgm_studies.models.mlp import GeneratorMLP, TwoTimeMLP, VelocityMLP
from mgm_studies.models.unet import GeneratorUNet, TwoTimeUNet, VelocityUNet

__all__ = [
    "FourierTimeEmbedding",
    "GeneratorMLP",
    "GeneratorUNet",
    "SinusoidalTimeEmbedding",
    "TimeEmbeddingKind",
    "TwoTimeMLP",
    "TwoTimeUNet",
    "VelocityMLP",
    "VelocityUNet",
    "make_time_embedding",
]
