"""Histogram KL on 1-D and 2-D data, over bin masses (never densities), so that its value does not depend on the
bin count for densities that are constant on the cells.

The box and bin count come from the dataset (`VectorDataset.histogram`); the data side uses exact bin masses where
the dataset knows them (checkerboard, diagonal gaussian) and a large reference sample otherwise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mgm_studies.data.base import HistogramSpec, VectorDataset

REFERENCE_CHUNK = 1 << 20  # reference points drawn at once: a larger reference_size is drawn and binned in parts


def histogram_masses(samples: Tensor, spec: HistogramSpec) -> Tensor:
    """Fraction of `samples` in each cell of `spec`.

    Args:
        samples: (n, d) points, d = spec.dim in {1, 2}, any device and float dtype.
        spec: the box and bins.
    Returns:
        (bins**d + 1,) float64 on CPU, summing to 1: the cells row-major (first axis slowest), then the fraction of
        samples outside the box (non-finite samples count as outside).
    """
    return histogram_counts(samples, spec) / samples.shape[0]


def histogram_counts(samples: Tensor, spec: HistogramSpec) -> Tensor:
    """Number of `samples` in each cell of `spec`, laid out as in `histogram_masses`: counts of several batches add
    up to the counts of their union, so a histogram can be built chunk by chunk in bounded memory.

    Returns:
        (bins**d + 1,) float64 on CPU (exact integers below 2**53), the last entry counting the samples outside.
    """
    if spec.dim not in (1, 2):
        raise ValueError(f"histogram masses are implemented for d in {{1, 2}}, got d = {spec.dim}")
    if samples.ndim != 2 or samples.shape[1] != spec.dim:
        raise ValueError(f"samples must have shape (n, {spec.dim}), got {tuple(samples.shape)}")
    n = samples.shape[0]
    if n == 0:
        raise ValueError("no samples")
    x = samples.detach().to("cpu", torch.float64)
    low = torch.tensor(spec.low, dtype=torch.float64)
    high = torch.tensor(spec.high, dtype=torch.float64)
    inside = (torch.isfinite(x) & (x >= low) & (x <= high)).all(dim=1)
    x = x[inside]
    # The last cell holds its upper edge, as in torch.histogramdd.
    cell = ((x - low) / (high - low) * spec.bins).floor().long().clamp_(0, spec.bins - 1)
    flat = cell[:, 0] * spec.bins + cell[:, 1] if spec.dim == 2 else cell[:, 0]
    counts = torch.bincount(flat, minlength=spec.num_cells).to(torch.float64)
    outside = torch.tensor([n - int(inside.sum())], dtype=torch.float64)
    return torch.cat([counts, outside])


def kl_divergence(p: Tensor, q: Tensor, eps: float = 0.0) -> float:
    """KL(p || q) = sum_i p_i ln(p_i / q_i), in nats, over the entries of two mass vectors.

    Args:
        p, q: non-negative tensors of the same shape (masses or counts; each is normalised to sum 1).
        eps: smoothing: eps is added to every entry of both p and q, and each is renormalised to sum 1, before the
            sum. With eps > 0 the value is finite; it then depends slightly on the number of bins.
    Returns:
        The divergence; terms with p_i = 0 contribute 0, and p_i > 0 with q_i = 0 (eps = 0) gives inf.
    """
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    p = _normalised(p.detach().to("cpu", torch.float64) + eps, "p")
    q = _normalised(q.detach().to("cpu", torch.float64) + eps, "q")
    support = p > 0
    if (q[support] == 0).any():
        return math.inf
    p, q = p[support], q[support]
    return float((p * (p.log() - q.log())).sum())


def _normalised(masses: Tensor, name: str) -> Tensor:
    if not torch.isfinite(masses).all() or (masses < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    total = masses.sum()
    if total <= 0:
        raise ValueError(f"{name} has zero total mass")
    return masses / total


def histogram_kl(
    samples: Tensor,
    dataset: VectorDataset,
    *,
    bins: int | None = None,
    eps: float = 1e-6,
    reference_size: int = 100_000,
    generator: torch.Generator | None = None,
) -> float:
    """KL(data || model) on the dataset's declared histogram, in nats.

    Args:
        samples: (n, d) model samples, d in {1, 2}.
        dataset: the data; its `histogram` gives the box and bins.
        bins: bins per axis instead of the declared count.
        eps: smoothing added to every bin of both sides (see `kl_divergence`).
        reference_size: size of the data reference sample, used when the dataset has no exact bin masses.
        generator: draws that reference sample; None means a generator seeded with 0, for reproducible values.
    """
    if dataset.histogram is None:
        raise ValueError(f"dataset {dataset.name!r} (dimension {dataset.dim}) declares no histogram; KL is undefined")
    spec = dataset.histogram if bins is None else dataset.histogram.with_bins(bins)
    data = data_masses(dataset, spec, reference_size=reference_size, generator=generator)
    return kl_divergence(data, histogram_masses(samples, spec), eps)


def data_masses(
    dataset: VectorDataset, spec: HistogramSpec, *, reference_size: int, generator: torch.Generator | None = None
) -> Tensor:
    """The data side of `histogram_kl`: the exact bin masses when the dataset knows them, else the masses of a
    reference sample of `reference_size` points drawn with `generator` (None: seeded with 0).

    A reference of up to `REFERENCE_CHUNK` points is one draw; a larger one is drawn and binned in draws of that
    size, so memory stays bounded whatever `reference_size` is.
    """
    exact = dataset.bin_masses(spec)
    if exact is not None:
        return exact
    generator = generator or torch.Generator().manual_seed(0)
    counts = torch.zeros(spec.num_cells + 1, dtype=torch.float64)
    for start in range(0, reference_size, REFERENCE_CHUNK):
        counts += histogram_counts(dataset.reference(min(REFERENCE_CHUNK, reference_size - start), generator), spec)
    return counts / reference_size
