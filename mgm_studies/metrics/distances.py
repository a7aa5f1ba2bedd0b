"""Sample-based distances between two point clouds in R^d: sliced 2-Wasserstein and kernel MMD."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

_PROJECTION_CHUNK = 64  # projections sorted at once: bounds memory at n * 64 float64 values per input
_KERNEL_CHUNK = 1024  # rows of a kernel block: a block is 1024 x max_points float64 values
_BANDWIDTH_POINTS = 1024  # points of y used for the median-distance bandwidth
_BANDWIDTH_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


def sliced_wasserstein2(
    x: Tensor, y: Tensor, *, num_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced 2-Wasserstein distance between the empirical laws of x and y.

    SW2 = sqrt(E_theta[W2^2(<x, theta>, <y, theta>)]), theta uniform on the unit sphere (Monte Carlo over
    `num_projections` directions drawn with `generator`; None means a generator seeded with 0). Each 1-D W2^2 is
    exact: the integral over u in (0, 1) of the squared difference of the two empirical quantile functions, which
    for equal sizes is the mean squared difference of the sorted projections.

    Args:
        x: (n, d) samples; y: (m, d) samples, n, m >= 1. Any device; accumulation in float64.
    Returns:
        The distance, in the units of the data.
    """
    _check_pair(x, y)
    if num_projections < 1:
        raise ValueError(f"num_projections must be >= 1, got {num_projections}")
    generator = generator or torch.Generator().manual_seed(0)
    d = x.shape[1]
    theta = torch.randn(d, num_projections, generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    x, y = x.detach().to(torch.float64), y.detach().to(theta.device, torch.float64)
    index_x, index_y, weight = _quantile_grid(x.shape[0], y.shape[0], x.device)
    total = 0.0
    for directions in theta.split(_PROJECTION_CHUNK, dim=1):
        px = (x @ directions).sort(dim=0).values[index_x]  # (segments, chunk)
        py = (y @ directions).sort(dim=0).values[index_y]
        total += float((weight[:, None] * (px - py).square()).sum())
    return math.sqrt(total / num_projections)


def _quantile_grid(n: int, m: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Segments of (0, 1) on which both empirical quantile functions are constant.

    Returns the order-statistic index of each segment for a sample of size n and of size m, and its length.
    The breakpoints are {i / n} and {j / m}; for n == m the segments are the n pairs of sorted values.
    """
    edges = torch.cat([torch.arange(n + 1, dtype=torch.float64) / n, torch.arange(m + 1, dtype=torch.float64) / m])
    edges = edges.unique()  # sorted
    middle = (edges[1:] + edges[:-1]) / 2
    index_x = (middle * n).floor().long().clamp_(max=n - 1)
    index_y = (middle * m).floor().long().clamp_(max=m - 1)
    return index_x.to(device), index_y.to(device), edges.diff().to(device)


def mmd(
    x: Tensor,
    y: Tensor,
    *,
    bandwidths: Sequence[float] | None = None,
    max_points: int = 4096,
    generator: torch.Generator | None = None,
) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy MMD^2(x, y) (Gretton et al., 2012, eq. 3).

    Kernel: k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2)) over the bandwidths h. Default bandwidths: the median
    pairwise distance of (up to 1024 points of) y times 0.25, 0.5, 1, 2, 4. Each input is subsampled to at most
    `max_points` rows with `generator` (None means a generator seeded with 0); kernel sums run in row blocks so
    memory stays at a few blocks of 1024 x max_points values.

    Args:
        x: (n, d) samples; y: (m, d) samples, n, m >= 2. Any device; accumulation in float64.
    Returns:
        MMD^2. The estimate is unbiased, so for two samples of the same law it is near 0 and can be slightly
        negative.
    """
    _check_pair(x, y)
    if min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("mmd needs at least 2 points on each side")
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    generator = generator or torch.Generator().manual_seed(0)
    x = _subsample(x, max_points, generator).detach().to(torch.float64)
    y = _subsample(y, max_points, generator).detach().to(x.device, torch.float64)
    if bandwidths is None:
        scale = _median_distance(_subsample(y, _BANDWIDTH_POINTS, generator))
        bandwidths = [s * scale for s in _BANDWIDTH_SCALES]
    if not bandwidths or any(not (math.isfinite(h) and h > 0) for h in bandwidths):
        raise ValueError(f"bandwidths must be positive and finite, got {list(bandwidths)}")
    gammas = [1.0 / (2.0 * h * h) for h in bandwidths]
    # The kernel is translation invariant; centring keeps |a|^2 + |b|^2 - 2 a.b accurate for far-off data.
    centre = y.mean(dim=0)
    x, y = x - centre, y - centre
    n, m = x.shape[0], y.shape[0]
    # The diagonal of a same-sample block is k(a, a) = len(bandwidths) exactly; the unbiased estimator drops it.
    diagonal = len(gammas)
    xx = (_kernel_sum(x, x, gammas, symmetric=True) - n * diagonal) / (n * (n - 1))
    yy = (_kernel_sum(y, y, gammas, symmetric=True) - m * diagonal) / (m * (m - 1))
    xy = _kernel_sum(x, y, gammas) / (n * m)
    return xx + yy - 2.0 * xy


def _kernel_sum(a: Tensor, b: Tensor, gammas: Sequence[float], *, symmetric: bool = False) -> float:
    """sum_{i, j} sum_g exp(-g |a_i - b_j|^2), in row blocks of a.

    With `symmetric` (b is a), each block row only visits columns from its own start on and counts the columns
    past its diagonal square twice, which halves the work.
    """
    b_sq = b.square().sum(dim=1)
    total = 0.0
    for start in range(0, a.shape[0], _KERNEL_CHUNK):
        block = a[start : start + _KERNEL_CHUNK]
        columns = slice(start, None) if symmetric else slice(None)
        # |a|^2 + |b|^2 - 2 a.b, in place to keep one block-sized buffer besides the distances.
        dist_sq = torch.addmm(b_sq[None, columns], block, b[columns].T, alpha=-2.0)
        dist_sq.add_(block.square().sum(dim=1)[:, None]).clamp_min_(0.0)
        buffer = torch.empty_like(dist_sq)
        for g in gammas:
            values = torch.mul(dist_sq, -g, out=buffer).exp_()
            if symmetric:
                square = values[:, : block.shape[0]]
                total += float(square.sum()) + 2.0 * float(values[:, block.shape[0] :].sum())
            else:
                total += float(values.sum())
    return total


def _median_distance(points: Tensor) -> float:
    """Median of the pairwise distances |a_i - a_j|, i < j (1.0 if they are all 0, for a degenerate sample)."""
    distances = torch.cdist(points, points)
    i, j = torch.triu_indices(len(points), len(points), offset=1, device=points.device)
    median = float(distances[i, j].median())
    return median if median > 0 else 1.0


def _subsample(points: Tensor, max_points: int, generator: torch.Generator) -> Tensor:
    if points.shape[0] <= max_points:
        return points
    index = torch.randperm(points.shape[0], generator=generator)[:max_points]
    return points[index.to(points.device)]


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) and (m, d), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError("x and y must each hold at least one point")
