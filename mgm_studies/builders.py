"""Config sections -> live objects: the dataset, the interpolant, the network, the objective.

Nothing here loads or trains a teacher: `runs.build_run` resolves one and hands it to `build_parts`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from torch import nn

from mgm_studies.config import RunConfig
from mgm_studies.configbase import ConfigError
from mgm_studies.data import DataError, VectorDataset, data_shape
from mgm_studies.metrics.kl_paper import kl_paper_data_masses
from mgm_studies.models import ModelConfig, UNetConfig
from mgm_studies.models.denoising_generator import DenoisingGenerator
from mgm_studies.objectives import VelocityHeads, build_objective
from mgm_studies.objectives.base import DenoisingGeneratorKind
from mgm_studies.training.parts import RunParts


def build_dataset(config: RunConfig) -> VectorDataset:
    """The run's data; a bad file or option is a ConfigError naming `data.<field>`.

    Also checks what the data must support for the requested metrics (KL needs a histogram, so d <= 2; `kl_paper`
    2-D data with exact cell masses).
    """
    data = config.data
    try:
        dataset = data.build()
    except DataError as exc:
        raise ConfigError.single(f"data.{exc.field}", exc.message) from None
    if "kl" in config.eval.metrics and dataset.histogram is None:
        raise ConfigError.single(
            "eval.metrics",
            f"'kl' is a histogram KL defined for data of dimension 1 or 2; this data has dimension {dataset.dim} "
            "(use sw2 or mmd)",
        )
    if "kl_paper" in config.eval.metrics:
        try:
            kl_paper_data_masses(dataset)
        except ValueError as exc:
            raise ConfigError.single("eval.metrics", str(exc)) from None
    image = len(data_shape(dataset)) == 3
    for metric in ("fid", "kid"):
        if metric in config.eval.metrics and not image:
            raise ConfigError.single("eval.metrics", f"{metric!r} is for image data; {data.name!r} is vector data")
    weights = config.eval.fid.weights
    if image and weights is not None and not Path(weights).is_file():
        raise ConfigError.single("eval.fid.weights", f"file not found: {weights}")
    if image != isinstance(config.model, UNetConfig):
        raise ConfigError.single(
            "model.name",
            f"data {data.name!r} has samples of shape {data_shape(dataset)}: "
            + ("images need model: {name: unet}" if image else "vectors need model: {name: mlp} (the default)"),
        )
    return dataset


def build_model(
    config: ModelConfig, shape: int | tuple[int, ...], kind: str | VelocityHeads | DenoisingGeneratorKind
) -> nn.Module:
    """The network an objective trains on samples of `shape` ((d,) for vectors, (C, H, W) for images), built by the
    model section (`MLPConfig.build`, `UNetConfig.build`): `velocity` -> v(t, x), `two_time` -> u(s, t, x),
    `generator` -> G(z), `VelocityHeads(k)` -> a v(t, x) with k output heads (generator matching),
    `DenoisingGeneratorKind` -> G(z) around a v(t, x) (MGM's warm-up)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if isinstance(kind, DenoisingGeneratorKind):
        velocity = config.build(shape, "velocity")
        return DenoisingGenerator(velocity, time=kind.time, scale_x=kind.scale_x, scale_v=kind.scale_v)
    if isinstance(kind, VelocityHeads):
        return config.build(shape, "velocity", heads=kind.heads)
    return config.build(shape, kind)


def build_parts(
    config: RunConfig, dataset: VectorDataset, teacher: nn.Module | None = None, teacher_source: str | None = None
) -> RunParts:
    """What a Trainer trains, from `config` and its checked `dataset` (`build_dataset`). A distillation objective
    gets its frozen `teacher` velocity b(t, x) and where it came from (`runs.build_run` resolves, and if needed
    trains, the teacher first)."""
    interpolant = config.interpolant.build()
    objective = build_objective(config.objective, interpolant, teacher)
    objective.teacher_source = teacher_source  # provenance: logged as the run's `mgm.teacher_source` tag
    return RunParts(dataset, interpolant, objective, partial(build_model, config.model, data_shape(dataset)))
