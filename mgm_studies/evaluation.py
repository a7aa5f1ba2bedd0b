"""Evaluation on the NFE ladder: sample with K steps for each K, compute each metric, name it `metric/nfe-K`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mgm_studies.config import EvalConfig
from mgm_studies.data import VectorDataset, data_shape
from mgm_studies.metrics import histogram_kl, mmd, sliced_wasserstein2
from mgm_studies.objectives import Objective
from mgm_studies.sampling import SampleResult
from mgm_studies.training.reporter import Evaluation

_CHUNK = 8192  # samples per forward pass: bounds evaluation memory for any num_samples
GRID_IMAGES = 64  # image samples an evaluation keeps (per number of steps) for its sample grid


def metric_name(metric: str, num_steps: int) -> str:
    """The one name a metric has in Tune, MLflow and reports (platform.md): `kl/nfe-4`."""
    return f"{metric}/nfe-{num_steps}"


@torch.no_grad()
def generate(
    objective: Objective, model: nn.Module, noise: Tensor, num_steps: int, device: torch.device
) -> SampleResult:
    """Samples from noise (N, *shape) in chunks; returns them on the CPU with the NFE count."""
    chunks, nfe = [], 0
    for part in noise.split(_CHUNK):
        result = objective.sample(model, part.to(device), num_steps)
        chunks.append(result.x.float().cpu())
        nfe = result.nfe
    return SampleResult(x=torch.cat(chunks), nfe=nfe)


def evaluate(
    model: nn.Module,
    objective: Objective,
    dataset: VectorDataset,
    config: EvalConfig,
    *,
    step: int,
    device: torch.device,
    steps: Sequence[int] | None = None,
    num_samples: int | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> Evaluation:
    """Evaluate `model` (already in eval mode, EMA weights loaded) with each number of sampling steps.

    The noise and the reference draws come from a generator seeded by `seed` (default `config.seed`), so that
    evaluations at different training steps, and different step counts, see the same noise.
    """
    steps = list(steps or config.steps)
    n = num_samples or config.num_samples
    generator = torch.Generator().manual_seed(config.seed if seed is None else seed)
    shape = data_shape(dataset)
    image = len(shape) == 3
    noise = objective.interpolant.noise((n, *shape), generator)
    reference = dataset.reference(n, generator)
    metrics: dict[str, float] = {}
    samples: dict[int, Tensor] = {}
    show = progress and sys.stderr.isatty()  # as in training: a bar on a terminal only
    quality = None
    if image and {"fid", "kid"} & set(config.metrics):
        from mgm_studies.metrics.image_quality import ImageQuality

        quality = ImageQuality(dataset, config.fid, config.metrics, device)
    tags = quality.provenance(n) if quality is not None else {}
    for k in tqdm(steps, desc="evaluate", unit="ladder step", disable=not show, leave=False):
        result = generate(objective, model, noise, k, device)
        samples[k] = result.x[:GRID_IMAGES] if image else result.x  # images: what a sample grid shows
        metrics[f"fevals/nfe-{k}"] = float(result.nfe)
        if quality is not None:
            metrics.update({metric_name(name, k): value for name, value in quality(result.x).items()})
        for metric in (m for m in config.metrics if m not in ("fid", "kid")):
            x, ref = (result.x.flatten(1), reference.flatten(1)) if image else (result.x, reference)
            metrics[metric_name(metric, k)] = _metric(metric, x, ref, dataset, config, generator)
    kept = reference[:GRID_IMAGES] if image else reference
    return Evaluation(step=step, metrics=metrics, samples=samples, reference=kept, tags=tags)


def _metric(
    metric: str,
    x: Tensor,
    reference: Tensor,
    dataset: VectorDataset,
    config: EvalConfig,
    generator: torch.Generator,
) -> float:
    if metric == "kl":
        return histogram_kl(
            x,
            dataset,
            bins=config.kl_bins,
            eps=config.kl_eps,
            reference_size=config.reference_samples,
            generator=generator,
        )
    if metric == "sw2":
        return sliced_wasserstein2(x, reference, generator=generator)
    return mmd(x, reference, generator=generator)
