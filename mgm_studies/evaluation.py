"""Evaluation on the NFE ladder: sample with K steps for each K, compute each metric, name it `metric/nfe-K`.

Memory stays bounded whatever `eval.num_samples` is: noise is drawn and sampled chunk by chunk, KL (`kl`,
`kl_paper`) accumulates its histogram counts over the chunks, and SW2 / MMD see the first `distance_points(shape)`
samples against a reference of that size. Only FID / KID keep every image sample (torch-fidelity takes them whole);
`preflight.check_fits` refuses an `eval.num_samples` whose images cannot fit.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mgm_studies.config import EvalConfig
from mgm_studies.data import HistogramSpec, VectorDataset, data_shape
from mgm_studies.interpolants import Interpolant
from mgm_studies.metrics import mmd, sliced_wasserstein2
from mgm_studies.metrics.kl import data_masses, histogram_counts, kl_divergence
from mgm_studies.metrics.kl_paper import kl_paper_data_masses, kl_paper_divergence, kl_paper_grid
from mgm_studies.names import eval_metric  # `kl/nfe-4`: its one name in Tune, MLflow, reports
from mgm_studies.objectives import Objective
from mgm_studies.sampling import SampleResult
from mgm_studies.training.reporter import Evaluation

SAMPLE_CHUNK = 8192  # samples per forward pass at most (read at call time: tests make it small)
CHUNK_VALUES = 1 << 20  # values (samples x data size) per forward pass at most: image chunks hold fewer samples
DISTANCE_POINTS = 65_536  # samples (and reference points) SW2 and MMD see at most
DISTANCE_VALUES = 1 << 25  # ... and values: fewer points for images
GRID_IMAGES = 64  # image samples an evaluation keeps (per number of steps) for its sample grid
_NORMAL_BLOCK = 16  # torch's CPU normal sampler works in blocks of 16 values (see `chunk_sizes`)


def chunk_sizes(n: int, shape: Sequence[int]) -> list[int]:
    """How `n` samples of `shape` are split into forward passes: at most SAMPLE_CHUNK samples and CHUNK_VALUES values
    each, a multiple of 16 samples, the remainder last (merged into the chunk before it when it holds < 16 values).

    Why 16: torch's CPU `randn` turns uniforms into normals in blocks of 16 and redraws a ragged tail of a tensor of
    >= 16 values, so chunks of 16k values, with a last chunk of >= 16 values, draw exactly the values of one call.
    """
    per_sample = math.prod(shape)
    size = min(SAMPLE_CHUNK, CHUNK_VALUES // per_sample) // _NORMAL_BLOCK * _NORMAL_BLOCK
    size = max(size, _NORMAL_BLOCK)
    sizes = [size] * (n // size) + ([n % size] if n % size else [])
    if len(sizes) > 1 and sizes[-1] * per_sample < _NORMAL_BLOCK:
        tail = sizes.pop()
        sizes[-1] += tail
    return sizes


def noise_chunks(
    interpolant: Interpolant, n: int, shape: Sequence[int], generator: torch.Generator
) -> Iterator[Tensor]:
    """x0 for `n` samples, chunk by chunk (`chunk_sizes`), all drawn from `generator`: on a CPU generator, the
    concatenated chunks equal `interpolant.noise((n, *shape), generator)` (a test pins it)."""
    for size in chunk_sizes(n, shape):
        yield interpolant.noise((size, *shape), generator)


def generate_chunks(
    objective: Objective, model: nn.Module, noise: Iterable[Tensor], num_steps: int, device: torch.device
) -> Iterator[SampleResult]:
    """Samples of each noise chunk, float32 on the CPU, with the NFE count."""
    for part in noise:
        with torch.no_grad():  # not around the yield: the caller's code runs in its own grad mode
            result = objective.sample(model, part.to(device), num_steps)
        yield SampleResult(x=result.x.float().cpu(), nfe=result.nfe)


def generate(
    objective: Objective, model: nn.Module, noise: Tensor, num_steps: int, device: torch.device
) -> SampleResult:
    """Samples from noise (N, *shape) held whole, sampled in chunks; returns them on the CPU with the NFE count."""
    parts = list(
        generate_chunks(objective, model, noise.split(chunk_sizes(len(noise), noise.shape[1:])), num_steps, device)
    )
    return SampleResult(x=torch.cat([p.x for p in parts]), nfe=parts[-1].nfe)


def distance_points(shape: Sequence[int]) -> int:
    """How many samples (and reference points) SW2 and MMD use: DISTANCE_POINTS, fewer for large samples."""
    return max(2, min(DISTANCE_POINTS, DISTANCE_VALUES // math.prod(shape)))


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
    evaluations at different training steps, and different step counts, see the same noise: the first step count
    draws the noise from it chunk by chunk, then the reference and the metrics' draws continue it (the draws one
    whole-tensor evaluation made); later step counts replay the same noise from a fresh generator with that seed.
    """
    steps = list(steps or config.steps)
    n = num_samples or config.num_samples
    seed = config.seed if seed is None else seed
    generator = torch.Generator().manual_seed(seed)
    shape = data_shape(dataset)
    image = len(shape) == 3
    distances = [m for m in config.metrics if m in ("sw2", "mmd")]
    kept = min(n, distance_points(shape)) if distances or not image else min(n, GRID_IMAGES)
    grids: dict[str, HistogramSpec] = {}  # KL metric -> the cells its model histogram counts
    if "kl" in config.metrics:
        grids["kl"] = dataset.histogram if config.kl_bins is None else dataset.histogram.with_bins(config.kl_bins)
    if "kl_paper" in config.metrics:
        grids["kl_paper"] = kl_paper_grid(dataset)
    quality = None
    if image and {"fid", "kid"} & set(config.metrics):
        from mgm_studies.memory import check_images_fit
        from mgm_studies.metrics.image_quality import ImageQuality

        check_images_fit(n, shape, "eval.num_samples" if num_samples is None else "--num-samples")
        quality = ImageQuality(dataset, config.fid, config.metrics, device)
    tags = quality.provenance(n) if quality is not None else {}
    metrics: dict[str, float] = {}
    samples: dict[int, Tensor] = {}
    reference: Tensor | None = None
    show = progress and sys.stderr.isatty()  # as in training: a bar on a terminal only
    for index, k in enumerate(tqdm(steps, desc="evaluate", unit="ladder step", disable=not show, leave=False)):
        noise = noise_chunks(
            objective.interpolant, n, shape, generator if index == 0 else torch.Generator().manual_seed(seed)
        )
        counts = {metric: torch.zeros(grid.num_cells + 1, dtype=torch.float64) for metric, grid in grids.items()}
        whole = torch.empty((n, *shape)) if quality is not None else None  # FID needs every image at once
        first: list[Tensor] = []  # the first `kept` samples
        done, nfe = 0, 0
        for result in generate_chunks(objective, model, noise, k, device):
            x, nfe = result.x, result.nfe
            for metric, grid in grids.items():
                counts[metric] += histogram_counts(x, grid)
            if done < kept:
                first.append(x[: kept - done])
            if whole is not None:
                whole[done : done + len(x)] = x
            done += len(x)
        if reference is None:  # drawn after the first step count's noise, as when the noise was one draw
            reference = dataset.reference(kept, generator)
        x = torch.cat(first)
        samples[k] = x[:GRID_IMAGES] if image else x  # images: what a sample grid shows
        metrics[eval_metric("fevals", k)] = float(nfe)
        if whole is not None:
            metrics.update({eval_metric(name, k): value for name, value in quality(whole).items()})
            del whole
        for metric in (m for m in config.metrics if m not in ("fid", "kid")):
            if metric == "kl":
                data = data_masses(dataset, grids["kl"], reference_size=config.reference_samples, generator=generator)
                value = kl_divergence(data, counts["kl"] / n, config.kl_eps)
            elif metric == "kl_paper":
                value = kl_paper_divergence(kl_paper_data_masses(dataset), counts["kl_paper"] / n)
            elif metric == "sw2":
                value = sliced_wasserstein2(x.flatten(1), reference.flatten(1), generator=generator)
            else:
                value = mmd(x.flatten(1), reference.flatten(1), generator=generator)
            metrics[eval_metric(metric, k)] = value
    checks, check_tags = objective.evaluation_checks(model, dataset, torch.Generator().manual_seed(seed + 1), device)
    metrics.update(checks)
    kept_reference = reference[:GRID_IMAGES] if image else reference
    return Evaluation(
        step=step, metrics=metrics, samples=samples, reference=kept_reference, tags={**tags, **check_tags}
    )
