"""Networks: time embeddings; MLPs (vectors) and U-Nets (images) for a velocity v(t, x), a two-time average velocity
u(s, t, x) and a one-step generator G(z). Each network's config section lives beside it and registers here."""

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from mgm_studies.models.embeddings import (
    FourierTimeEmbedding,
    SinusoidalTimeEmbedding,
    make_time_embedding,
)
from mgm_studies.models.mlp import GeneratorMLP, MLPConfig, TwoTimeMLP, VelocityMLP
from mgm_studies.models.unet import GeneratorUNet, TwoTimeUNet, UNetConfig, VelocityUNet

# `model.name` -> its config section; a new network is one module (network and config) and one line here.
MODELS: dict[str, type] = {"mlp": MLPConfig, "unet": UNetConfig}


def _model_kind(value: Any) -> str:
    """The model union's tag: `name`, with `mlp` when it is left out (every config before the U-Net omits it)."""
    return value.get("name", "mlp") if isinstance(value, dict) else getattr(value, "name", "mlp")


ModelConfig = Annotated[
    Union[tuple(Annotated[config, Tag(name)] for name, config in MODELS.items())],  # noqa: UP007
    Discriminator(_model_kind),
]

__all__ = [
    "MODELS",
    "FourierTimeEmbedding",
    "GeneratorMLP",
    "GeneratorUNet",
    "MLPConfig",
    "ModelConfig",
    "SinusoidalTimeEmbedding",
    "TwoTimeMLP",
    "TwoTimeUNet",
    "UNetConfig",
    "VelocityMLP",
    "VelocityUNet",
    "make_time_embedding",
]
