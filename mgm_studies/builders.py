"""Config sections -> live objects: the dataset, the interpolant, the network, the objective."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from torch import nn

from mgm_studies.config import (
    IMAGE_DATA,
    FileDataConfig,
    GaussianDataConfig,
    ModelConfig,
    RunConfig,
    UNetConfig,
)
from mgm_studies.configbase import ConfigError
from mgm_studies.data import DataError, FileData, GaussianData, VectorDataset, data_shape, make_toy_dataset
from mgm_studies.interpolants import Interpolant
from mgm_studies.metrics.kl_paper import kl_paper_data_masses
from mgm_studies.models import GeneratorMLP, TwoTimeMLP, VelocityMLP
from mgm_studies.models.denoising_generator import DenoisingGenerator
from mgm_studies.objectives import Objective, VelocityHeads, build_objective
from mgm_studies.objectives.base import DenoisingGeneratorKind


def build_dataset(config: RunConfig) -> VectorDataset:
    """The run's data; a bad file or option is a ConfigError naming `data.<field>`.

    Also checks what the data must support for the requested metrics (KL needs a histogram, so d <= 2; `kl_paper`
    2-D data with exact cell masses).
    """
    data = config.data
    try:
        if data.name in IMAGE_DATA:
            from mgm_studies.data.images import make_image_dataset

            options = data.model_dump(exclude={"name"})
            dataset = make_image_dataset(data.name, **options)
        elif isinstance(data, FileDataConfig):
            dataset = FileData(data.path, columns=data.columns)
        elif isinstance(data, GaussianDataConfig):
            dataset = GaussianData(data.mean, data.cov)
        else:
            dataset = make_toy_dataset(data.name)
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
    """The network an objective trains on samples of `shape` ((d,) for vectors, (C, H, W) for images):
    `velocity` -> v(t, x), `two_time` -> u(s, t, x), `generator` -> G(z), `VelocityHeads(k)` -> a v(t, x) with k
    output heads (generator matching), `DenoisingGeneratorKind` -> G(z) around a v(t, x) (MGM's warm-up).
    An MLP for vectors, a U-Net for images."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if isinstance(kind, DenoisingGeneratorKind):  # MGM after a denoising warm-up: a velocity network inside G
        velocity = build_model(config, shape, "velocity")
        return DenoisingGenerator(velocity, time=kind.time, scale_x=kind.scale_x, scale_v=kind.scale_v)
    if isinstance(config, UNetConfig):
        return _build_unet(config, shape, kind)
    dim = shape[0]
    options = dict(
        hidden=config.hidden,
        depth=config.depth,
        time_embedding=config.time_embedding,
        embedding_dim=config.embedding_dim,
        activation=config.activation,
    )
    if kind == "velocity":
        return VelocityMLP(dim, **options)
    if isinstance(kind, VelocityHeads):
        return VelocityMLP(dim, **options, heads=kind.heads)
    if kind == "two_time":
        return TwoTimeMLP(dim, **options, time_pair=config.time_pair)
    if kind == "generator":  # a one-step generator G(z) has no time input
        return GeneratorMLP(dim, hidden=config.hidden, depth=config.depth, activation=config.activation)
    raise ValueError(f"no model for kind {kind!r}")


def _build_unet(config: UNetConfig, shape: tuple[int, ...], kind: str | VelocityHeads) -> nn.Module:
    from mgm_studies.models.unet import GeneratorUNet, TwoTimeUNet, VelocityUNet

    options = config.model_dump(exclude={"name", "time_embedding", "embedding_dim", "time_pair"})
    timed = dict(options, time_embedding=config.time_embedding, embedding_dim=config.embedding_dim)
    if kind == "velocity":
        return VelocityUNet(shape, **timed)
    if isinstance(kind, VelocityHeads):
        return VelocityUNet(shape, **timed, heads=kind.heads)
    if kind == "two_time":
        return TwoTimeUNet(shape, **timed, time_pair=config.time_pair)
    if kind == "generator":
        return GeneratorUNet(shape, **options)
    raise ValueError(f"no model for kind {kind!r}")


def build_run(
    config: RunConfig, *, device: str = "cpu", teachers: Literal["load", "check"] = "load"
) -> tuple[VectorDataset, Interpolant, Objective | None]:
    """Everything a run needs before its network: validated early, so bad input fails before any tracking.

    Sizes that cannot fit on `device` (its memory, see `preflight.check_fits`) are refused here, naming the field,
    before a teacher is trained or loaded.
    A distillation objective's teacher is loaded (trained first when it is named by a config with no finished run).
    With `teachers="check"` (what `validate` does) the teacher is only checked, nothing is trained, and the objective
    of a distillation run comes back as None.
    """
    from mgm_studies.preflight import check_fits
    from mgm_studies.teachers import load_teacher, requirements  # teachers build datasets with this module

    dataset = build_dataset(config)
    check_fits(config, dataset, device)
    interpolant = config.interpolant.build()
    if getattr(config.objective, "teacher", None) is None:  # pfmm needs one only with reference: teacher
        return dataset, interpolant, build_objective(config.objective, interpolant)
    interpolant_config, model_config = requirements(config)  # MGM copies weights: the same network, no gamma
    teacher = load_teacher(
        config.objective.teacher,
        interpolant=interpolant_config,
        model=model_config,
        dim=dataset.dim,
        device=device,
        train_missing=teachers == "load",
        load=teachers == "load",
    )
    if teacher is None:
        return dataset, interpolant, None
    objective = build_objective(config.objective, interpolant, teacher.velocity)
    objective.teacher_source = teacher.source  # provenance: logged as the run's `mgm.teacher_source` tag
    return dataset, interpolant, objective
