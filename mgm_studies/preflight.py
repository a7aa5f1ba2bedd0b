"""Refuse a run that cannot fit before anything is tracked: `runs.build_run` calls `check_fits`.

Two checks, each a ConfigError naming the field at fault:
1. Sizes: an integer size field above MAX_SIZE (2**31 - 1, torch's int32 indexing limit) and a layer count above
   MAX_LAYERS is refused outright (YAML reads `1e12` as a float and pydantic takes a whole float as an int).
2. Memory: the bytes a run needs, in float32, against the memory of where it runs (the whole physical memory, or the
   cgroup limit, for the CPU; the device's total for CUDA; a transient shortage is not the config's fault):
   - weights: every trainable parameter with its gradient and two Adam moments (16 bytes), plus the model's EMA
     copies, the evaluation copy and one frozen target (4 bytes each), counted on the `meta` device (no memory);
   - a training step: batch_size x the outputs of every layer for one sample (a `meta` forward), twice (forward
     and backward);
   - an evaluation chunk: the same per-sample outputs for one sampling chunk (`evaluation.chunk_sizes`);
   - FID / KID (images): every generated image and its features, and the reference set (host memory).
   Each term is a lower-ish estimate (one forward per step, no allocator slack), so that a plausible config always
   passes: the aim is to refuse a batch of 1e12 or a width of 1e8 with its field named, not to predict peak memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mgm_studies.builders import build_model
from mgm_studies.config import RunConfig
from mgm_studies.configbase import ConfigError
from mgm_studies.data import VectorDataset, data_shape
from mgm_studies.memory import FLOAT_BYTES, GIB, available_memory, fid_image_bytes
from mgm_studies.objectives import build_objective

MAX_SIZE = 2**31 - 1  # any size field (batch, width, samples)
MAX_LAYERS = 1000  # depth, residual blocks per level, levels: also keeps the `meta` build fast
_TRAINED_BYTES = 16  # weight, gradient, Adam's two moments
_NOT_SIZES = ("seed", "steps", "images", "interval")  # integers that cost time, not memory
_LAYER_FIELDS = ("depth", "critic_depth", "num_res_blocks")


@dataclass(frozen=True)
class Term:
    """Bytes one part of a run needs, where ("device" or "host"), and the config field that sets its size."""

    what: str
    bytes: int
    field: str
    where: str = "device"


def check_sizes(config: RunConfig) -> None:
    """Refuse integer fields beyond any machine: sizes above MAX_SIZE, layer counts above MAX_LAYERS."""
    problems: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{prefix}.{index}", item)
        elif isinstance(value, int) and not isinstance(value, bool):
            name = prefix.rsplit(".", 1)[-1]
            if name in _LAYER_FIELDS and value > MAX_LAYERS:
                problems.append((prefix, f"at most {MAX_LAYERS} layers, got {value}"))
            elif value > MAX_SIZE and not any(word in prefix for word in _NOT_SIZES):
                problems.append((prefix, f"at most {MAX_SIZE} (2**31 - 1), got {value}"))

    walk("", config.model_dump())
    levels = getattr(config.model, "channel_mult", [])
    if len(levels) > MAX_LAYERS:
        problems.append(("model.channel_mult", f"at most {MAX_LAYERS} levels, got {len(levels)}"))
    if problems:
        raise ConfigError(problems)


def estimate(config: RunConfig, dataset: VectorDataset, device: str = "cpu") -> list[Term]:
    """The memory terms of `config` on `dataset` (see the module docstring); `check_sizes` must pass first."""
    from mgm_studies.evaluation import chunk_sizes

    shape = data_shape(dataset)
    trained, model_params, per_sample = _count(config, shape)
    width = model_field(config)
    ema_copies = len(config.train.ema_decays) + 2  # + the evaluation copy + a frozen target (ITVM, PFMM)
    terms = [
        Term(
            f"{trained:,} trained parameters", trained * _TRAINED_BYTES + model_params * ema_copies * FLOAT_BYTES, width
        ),
        Term(
            f"a training batch of {config.train.batch_size:,} at {per_sample:,} values per sample",
            2 * config.train.batch_size * per_sample * FLOAT_BYTES,
            "train.batch_size",
        ),
    ]
    chunk = chunk_sizes(config.eval.num_samples, shape)[0]
    terms.append(Term(f"a sampling chunk of {chunk:,}", chunk * per_sample * FLOAT_BYTES, width))
    images = getattr(dataset, "images", None)
    if isinstance(images, torch.Tensor) and config.train.data_on_device and torch.device(device).type == "cuda":
        terms.append(Term("the training images", images.numel() * images.element_size(), "data"))
    if len(shape) == 3 and {"fid", "kid"} & set(config.eval.metrics):
        per_image = fid_image_bytes(shape)
        n = config.eval.num_samples
        terms.append(Term(f"{n:,} generated images for FID", n * per_image, "eval.num_samples", "host"))
        size = config.eval.fid.reference_size or len(dataset)
        terms.append(Term(f"{size:,} reference images for FID", size * per_image, "eval.fid.reference_size", "host"))
    return terms


def check_fits(
    config: RunConfig, dataset: VectorDataset, device: str = "cpu", *, memory: dict[str, int] | None = None
) -> list[Term]:
    """Raise ConfigError naming the field of the largest term when the run's terms exceed the memory of where they
    live; `memory` ({"device": bytes, "host": bytes}) overrides what this machine has. Returns the terms."""
    check_sizes(config)
    terms = estimate(config, dataset, device)
    memory = memory or available_memory(device)
    if torch.device(device).type == "cpu":  # one memory holds everything
        places = {"host": terms}
    else:
        places = {place: [t for t in terms if t.where == place] for place in ("device", "host")}
    for place, group in places.items():
        total = sum(t.bytes for t in group)
        if total <= memory[place]:
            continue
        worst = max(group, key=lambda t: t.bytes)
        parts = ", ".join(f"{t.what}: {t.bytes / GIB:.3g} GiB" for t in sorted(group, key=lambda t: -t.bytes))
        name = f"{device} memory" if place == "device" else "host memory"
        raise ConfigError.single(
            worst.field,
            f"too large: the run needs about {total / GIB:.3g} GiB ({parts}) and the {name} is "
            f"{memory[place] / GIB:.3g} GiB",
        )
    return terms


def model_field(config: RunConfig) -> str:
    """The model (or objective) size field furthest above its default: what a too-large network is blamed on."""
    candidates: list[tuple[float, str]] = []
    for section, prefix in ((config.model, "model"), (config.objective, "objective")):
        for name, info in type(section).model_fields.items():
            value, default = getattr(section, name), info.default
            if type(value) is int and type(default) is int and default > 0 and not any(w in name for w in _NOT_SIZES):
                candidates.append((value / default, f"{prefix}.{name}"))
    mult = getattr(config.model, "channel_mult", None)
    if mult:
        candidates.append((max(mult) / 2, "model.channel_mult"))
    width = "model.channels" if "channel_mult" in type(config.model).model_fields else "model.hidden"
    return max(candidates, default=(0.0, width), key=lambda c: (c[0], c[1] == width))[1]


def _count(config: RunConfig, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(trainable parameters of the model and the objective's networks, the model's parameters, values every layer
    outputs for one sample), from networks built on the `meta` device: no memory, no initialisation cost."""
    objective = build_objective(config.objective, config.interpolant.build())  # a throwaway, teacher-less copy
    with torch.device("meta"):
        model = build_model(config.model, shape, objective.model_kind)
        try:
            objective.attach(model, shape, lambda kind: build_model(config.model, shape, kind))
            networks = [model, *objective.networks().values(), *objective.trained_with("model").values()]
        except Exception:  # an objective that cannot attach on `meta`: count the model alone
            networks = [model]
    trained = sum(p.numel() for network in networks for p in network.parameters() if p.requires_grad)
    params = sum(p.numel() for p in model.parameters())
    return trained, params, _outputs_per_sample(model, objective.model_kind, shape)


def _outputs_per_sample(model: nn.Module, kind: Any, shape: tuple[int, ...]) -> int:
    """Values the leaf modules of `model` output for one sample (a `meta` forward): what autograd keeps, roughly."""
    total = 0

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        total += output.numel() if isinstance(output, torch.Tensor) else 0

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    x = torch.zeros((1, *shape), device="meta")
    t = torch.zeros(1, device="meta")
    try:
        with torch.no_grad():
            if kind == "generator":
                model(x)
            elif kind == "two_time":
                model(t, t, x)
            else:
                model(t, x)
    except Exception:  # a layer with no `meta` kernel: the input and the output at least
        total = 2 * math.prod(shape)
    finally:
        for handle in handles:
            handle.remove()
    return max(total, 2 * math.prod(shape))
