"""The run config: its sections, typed, frozen and validated by pydantic, and the rules across sections.

Every section refuses unknown keys. The data and model sections live beside the data sets and networks they configure
(`mgm_studies.data`, `mgm_studies.models`) and the objective sections beside the objectives; reading files, `--set`
overrides and file names is `loading`'s job. Cross-field rules that pydantic cannot express per field (a gamma whose
derivative is infinite at the ends needs `t_eps > 0`, the evaluated EMA must be one that is tracked) are checked in
`check_run_config`, and every problem comes out as a `ConfigError` naming the dotted field.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from mgm_studies.configbase import ConfigError, PositiveInt, Seed, StrictModel
from mgm_studies.data import IMAGE_DATA, DataConfig
from mgm_studies.interpolants import InterpolantConfig
from mgm_studies.loading import read_run_file, validation_problems
from mgm_studies.models import MLPConfig, ModelConfig, UNetConfig
from mgm_studies.objectives import OBJECTIVES, ObjectiveConfig
from mgm_studies.objectives.si import SIConfig
from mgm_studies.training.cuda_graph import refusals as cuda_graph_refusals


# ---------------------------------------------------------------- training
class OptimizerConfig(StrictModel):
    """Adam, AdamW or RAdam (torch.optim; `radam` is the flow-map paper's, arXiv 2505.18825 Table 2). Adam's and
    RAdam's `weight_decay` is an L2 term in the gradient, AdamW's is decoupled."""

    name: Literal["adam", "adamw", "radam"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (
        0.9,
        0.999,
    )
    weight_decay: float = Field(0.0, ge=0.0)
    eps: float = Field(1e-8, gt=0.0)


class LRScheduleConfig(StrictModel):
    """Linear warm-up over `warmup_steps`, then constant, cosine or linear decay to `min_lr_ratio * lr`, or `sqrt`:
    constant up to step `decay_start`, then lr * sqrt(decay_start / step) (EDM2's inverse square root; the flow-map
    paper decays so after 35k steps)."""

    name: Literal["constant", "cosine", "linear", "sqrt"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    decay_start: int | None = Field(
        None, ge=1, validate_default=True, description="sqrt only: the step after which the lr decays, e.g. 35000"
    )

    @field_validator("decay_start")
    @classmethod
    def _decay_start_for_sqrt_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        name = info.data.get("name")
        if name == "sqrt" and value is None:
            raise ValueError("the sqrt schedule decays after step `decay_start`: give it (the paper's is 35000)")
        if name is not None and name != "sqrt" and value is not None:
            raise ValueError(f"only the sqrt schedule decays after `decay_start`; {name!r} does not use it")
        return value

    @field_validator("min_lr_ratio")
    @classmethod
    def _no_floor_for_sqrt(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("name") == "sqrt" and value != 0.0:
            raise ValueError("the sqrt schedule has no floor: leave min_lr_ratio at 0")
        return value


class TrainConfig(StrictModel):
    """Length in optimiser `steps` or in training `images` (samples seen); give one, not both."""

    steps: PositiveInt | None = None
    images: PositiveInt | None = None
    batch_size: PositiveInt = 256
    optimizer: OptimizerConfig = OptimizerConfig()
    lr_schedule: LRScheduleConfig = LRScheduleConfig()
    ema_decays: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(default_factory=lambda: [0.999])
    ema_warmup: bool = True
    grad_clip: float | None = Field(1.0, gt=0.0)
    precision: Literal["float32", "bfloat16"] = "float32"
    compile: bool = Field(
        False,
        description="torch.compile the trained network's forward (the objective's own networks stay eager); "
        "the first steps pay the compilation",
    )
    channels_last: bool = Field(
        False,
        description="images: network weights and batches in channels-last layout (measured slower for the shipped "
        "U-Net on an H100: README, Benchmarks)",
    )
    data_on_device: bool = Field(
        True, description="in-memory image sets: keep a copy on the training device and gather batches there"
    )
    cuda_graphs: bool = Field(
        False,
        description="capture the whole training step (loss, backward, clip, optimiser, EMAs) as one CUDA graph and "
        "replay it every step: removes the launch overhead that bounds small networks. One-phase objectives, "
        "float32, one worker, a CUDA device (training/cuda_graph.py says which objectives and why)",
    )
    seed: Seed = 0
    checkpoint_interval: PositiveInt = 1000
    log_interval: PositiveInt = 10

    @model_validator(mode="after")
    def _one_length(self) -> TrainConfig:
        if self.steps is None and self.images is None:
            raise ValueError("give the training length as `steps` or `images`")
        if self.steps is not None and self.images is not None:
            raise ValueError("give `steps` or `images`, not both")
        return self

    @property
    def num_steps(self) -> int:
        """Optimiser steps: `steps`, or `images` rounded up to whole batches."""
        return self.steps if self.steps is not None else math.ceil(self.images / self.batch_size)


class FIDOptions(StrictModel):
    """How FID / KID are computed (metrics/image_quality.py): the extractor, its weights, the reference set."""

    extractor: Literal["mgm-offline", "inception-v3-compat"] = "mgm-offline"
    weights: str | None = Field(
        None, description="extractor weights file; mgm-offline without one: trained once on the data and cached"
    )
    reference_size: int | None = Field(None, ge=2, description="reference images (seed 0); null: the whole set")
    cache_dir: str | None = Field(None, description="default $MGM_STUDIES_CACHE, else ~/.cache/mgm-studies")


class EvalConfig(StrictModel):
    """Metrics on the NFE ladder `steps` (one value of each metric per number of sampling steps). `kl` is for 1-D
    and 2-D data; `kl_paper` is the checkerboard KL of arXiv 2505.18825 (`metrics/kl_paper.py`; 2-D data with exact
    cell masses, 64000 samples in the paper); `fid` and `kid` for images; `sw2` and `mmd` for both (images
    flattened)."""

    metrics: list[Literal["kl", "kl_paper", "sw2", "mmd", "fid", "kid"]] = Field(
        default_factory=lambda: ["kl", "sw2"], min_length=1
    )
    fid: FIDOptions = FIDOptions()
    steps: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1)
    num_samples: int = Field(10_000, ge=2)
    interval: int = Field(0, ge=0, description="evaluate every `interval` steps; 0: only at the end")
    ema: float | Literal["raw"] | None = Field(None, description="EMA decay to evaluate; null: the first tracked")
    kl_bins: PositiveInt | None = None
    kl_eps: float = Field(1e-6, ge=0.0)
    reference_samples: int = Field(100_000, ge=2)
    seed: Seed = 1234

    @field_validator("steps", "metrics")
    @classmethod
    def _unique(cls, values: list) -> list:
        if len(set(values)) != len(values):
            raise ValueError(f"entries must be unique, got {values}")
        return values


RAY_RESOURCE_UNIT = 1e-4


class ResourcesConfig(StrictModel):
    """Where a run trains. `workers` and the executor matter to sweeps; a plain `train` uses one process."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: PositiveInt = 1
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(0.0, ge=0.0)  # a fraction packs several workers (trials) on one GPU
    executor: Literal["auto", "train", "inline"] = "auto"

    @field_validator("cpus_per_worker", "gpus_per_worker")
    @classmethod
    def _ray_granularity(cls, value: float) -> float:
        # Ray counts resources in units of 1/10000 and refuses a non-zero request below one unit.
        if 0 < value < RAY_RESOURCE_UNIT:
            raise ValueError(f"a fraction below Ray's unit of {RAY_RESOURCE_UNIT:g} cannot be scheduled")
        return value


class RunConfig(StrictModel):
    name: str | None = None
    data: DataConfig
    model: ModelConfig = MLPConfig()
    interpolant: InterpolantConfig = InterpolantConfig()
    objective: ObjectiveConfig = Field(default_factory=SIConfig)
    train: TrainConfig
    eval: EvalConfig = EvalConfig()
    resources: ResourcesConfig = ResourcesConfig()

    @model_validator(mode="before")
    @classmethod
    def _image_defaults(cls, data: Any) -> Any:
        """Image data defaults to a U-Net and to metrics defined for images (the vector defaults are an MLP and KL)."""
        section = data.get("data") if isinstance(data, dict) else None
        if not isinstance(section, dict) or section.get("name") not in IMAGE_DATA:
            return data
        data = dict(data)
        data.setdefault("model", {"name": "unet"})
        evaluation = data.get("eval")
        if evaluation is None or (isinstance(evaluation, dict) and "metrics" not in evaluation):
            data["eval"] = {**(evaluation or {}), "metrics": ["fid"]}
        objective = data.get("objective")  # and to what the objective changes for images (a value range)
        name = objective.get("name") if isinstance(objective, dict) else None
        if isinstance(name, str) and name in OBJECTIVES:
            data["objective"] = {**OBJECTIVES[name].image_defaults, **objective}
        return data

    def evaluated_ema(self) -> float | None:
        """The EMA decay that evaluation and sampling use; None for the raw weights."""
        if self.eval.ema == "raw":
            return None
        if self.eval.ema is None:
            return self.train.ema_decays[0] if self.train.ema_decays else None
        return self.eval.ema

    def config_hash(self) -> str:
        """A stable hash of the resolved config (run name excluded), for provenance and teacher reuse."""
        payload = json.dumps(self.model_dump(mode="json", exclude={"name"}), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def check_run_config(config: RunConfig) -> RunConfig:
    """Cross-field rules; raises ConfigError naming the field."""
    problems: list[tuple[str, str]] = []
    interp, entry = config.interpolant, OBJECTIVES[config.objective.name]
    if interp.vp_beta_max < interp.vp_beta_min:
        problems.append(("interpolant.vp_beta_max", f"must be >= vp_beta_min ({interp.vp_beta_min})"))
    else:
        interpolant = interp.build()
        time_law = getattr(config.objective, "time_law", None)
        at_zero, at_one = interpolant.singular_ends
        if time_law is not None and time_law.t_eps == 0.0 and (at_zero or at_one):
            ends = " and ".join(end for end, bad in (("t = 0", at_zero), ("t = 1", at_one)) if bad)
            why = f"interpolant (schedule {interp.schedule!r}, gamma {interp.gamma!r}) has an infinite derivative at "
            why += f"{ends}: sample t inside [t_eps, 1 - t_eps] with t_eps > 0, e.g. 1e-3"
            problems.append(("objective.time_law.t_eps", why))
        problems += [(f"interpolant.{field}", why) for field, why in entry.objective.interpolant_problems(interpolant)]
    if getattr(config.objective, "learned_weight", False) and not entry.objective.supports_learned_weight:
        supported = sorted(name for name, other in OBJECTIVES.items() if other.objective.supports_learned_weight)
        why = f"objective {config.objective.name!r} has no learned loss weight yet; it is for {', '.join(supported)}"
        problems.append(("objective.learned_weight", why))
    warmup = getattr(config.objective, "denoiser_steps", 0)
    if warmup >= config.train.num_steps:
        why = f"the warm-up ({warmup} steps) is counted in the run's {config.train.num_steps} steps: it must be shorter"
        problems.append(("objective.denoiser_steps", why))
    if getattr(config.objective, "critic_features", 0) and isinstance(config.model, UNetConfig):
        problems.append(("objective.critic_features", "random Fourier features are for vectors: set 0 for images"))
    if config.train.channels_last and not isinstance(config.model, UNetConfig):
        problems.append(("train.channels_last", "is a memory layout for images: it needs model: {name: unet}"))
    if config.train.cuda_graphs:
        problems.extend(("train.cuda_graphs", reason) for reason in cuda_graph_refusals(config))
    ema = config.eval.ema
    if isinstance(ema, float) and ema not in config.train.ema_decays:
        problems.append(("eval.ema", f"{ema} is not one of the tracked train.ema_decays {config.train.ema_decays}"))
    if problems:
        raise ConfigError(problems)
    return config


def parse_run_config(data: Any) -> RunConfig:
    """Validate a mapping (parsed YAML) into a RunConfig; raises ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError.single("", f"a run config is a mapping of sections, got {type(data).__name__}")
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, data)) from None
    return check_run_config(config)


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read, override, resolve relative file names against the config file's folder (`loading.read_run_file`),
    validate."""
    return parse_run_config(read_run_file(path, overrides))
