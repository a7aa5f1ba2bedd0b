"""The checkerboard KL of arXiv 2505.18825 (Boffi, Albergo, Vanden-Eijnden, "How to build a consistency model",
Table 1), an evaluation option (`eval.metrics: [kl_paper]`) beside our own `kl`, which stays the default.

The protocol as the paper states it (Appendix G as read): 64,000 model samples (`eval.num_samples: 64000`), a 50 x 50
grid, the data density integrated over each cell (exact for piecewise-uniform densities), and the model's mass per cell
from its samples' histogram. What the paper leaves unstated, and what we chose:

- Board and grid. The paper's code (nmboffi/flow-maps, `py/common/datasets.py`, dated 10/5/25, read in the public
  copy roni-dot/regularized-loss-flow-maps, first commit afdaefa; a 6/19/25 version agrees) samples the board on
  [-1, 1]^2: 4 x 4 squares of side 0.5, 8 filled (our `checkerboard_paper`). The grid is the dataset's declared box,
  for the checkerboards the board itself: cells of side 0.04, 12.5 per square, so square edges at +-0.5 cut cells in
  half and the exact per-cell integral matters. Our `checkerboard` is the same board scaled by 4 on [-4, 4]^2 (the
  FFJORD board, which a later fork of that code switched to); scaling the samples and the grid together maps cells
  to cells, so the metric takes the same values there (training is not scale-free: noise scale, network inputs).
- Direction: KL(data || model) = sum_i p_i ln(p_i / q_i), in nats, p the exact data masses, q = count_i / N.
- Outside the grid: a model sample outside the box (or non-finite) keeps its 1 / N, in an overflow cell where the
  data has no mass, so mass the model puts outside lowers the q_i inside and raises the KL; q is not renormalised.
- Empty cells: a cell with data mass and no model sample would make the KL infinite; its q_i is floored at
  `KL_PAPER_FLOOR` = 1e-10, so each such cell adds p_i ln(p_i / 1e-10), about 0.0127 for a whole cell of the board
  (p_i = 8e-4). The data side is not smoothed. At 64,000 exact samples every cell of the board with data mass
  expects 25.6 samples or more, so an empty one means the model misses it.

Sampling noise: for exact samples, 2N KL is about a chi-square with K - 1 degrees of freedom (K cells with data mass),
so the expected value is (K - 1) / (2N) (plus 5/12 sum_i (1 / p_i) / N^2), 0.0107 for the board's 1,348 cells at
N = 64,000, with a spread of sqrt(2 (K - 1)) / (2N), 0.0004: the floor under the paper's 0.068 to 0.146.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mgm_studies.data.base import HistogramSpec, VectorDataset
from mgm_studies.metrics.kl import histogram_masses

KL_PAPER_BINS = 50  # cells per axis of the paper's grid
KL_PAPER_FLOOR = 1e-10  # model mass of an empty cell that holds data mass (the paper's handling is not stated)


def kl_paper_grid(dataset: VectorDataset) -> HistogramSpec:
    """The 50 x 50 grid over the dataset's declared box; ValueError for data that is not 2-D."""
    if dataset.histogram is None or dataset.histogram.dim != 2:
        raise ValueError(f"'kl_paper' is defined for 2-D data; {dataset.name!r} has dimension {dataset.dim}")
    return dataset.histogram.with_bins(KL_PAPER_BINS)


def kl_paper_data_masses(dataset: VectorDataset) -> Tensor:
    """The data density integrated over each cell of `kl_paper_grid`, (50**2 + 1,) float64 with the mass outside
    last; ValueError for data whose cell masses are not known exactly (the protocol integrates the density)."""
    masses = dataset.bin_masses(kl_paper_grid(dataset))
    if masses is None:
        raise ValueError(
            f"'kl_paper' integrates the data density over each cell: it needs data with exact cell masses "
            f"(checkerboard_paper, checkerboard, gaussian with a diagonal covariance); {dataset.name!r} has none"
        )
    return masses


def kl_paper_divergence(data: Tensor, model: Tensor, floor: float = KL_PAPER_FLOOR) -> float:
    """KL(data || model) = sum_i p_i ln(p_i / max(q_i, floor)) over the cells where p_i > 0, in nats.

    Args:
        data: (cells + 1,) masses p of the data, summing to 1 (the last entry: outside the grid).
        model: (cells + 1,) masses q of the model, count / N per cell, laid out as `data`; not renormalised.
        floor: the model mass given to a cell with p_i > 0 and no model sample (> 0: the value stays finite).
    """
    if data.shape != model.shape:
        raise ValueError(f"data and model must have the same shape, got {tuple(data.shape)} and {tuple(model.shape)}")
    if not (math.isfinite(floor) and floor > 0):
        raise ValueError(f"floor must be finite and > 0, got {floor}")
    p = data.detach().to("cpu", torch.float64)
    q = model.detach().to("cpu", torch.float64)
    for name, masses in (("data", p), ("model", q)):
        if not torch.isfinite(masses).all() or (masses < 0).any() or masses.sum() > 1 + 1e-9:
            raise ValueError(f"{name} masses must be finite, non-negative and sum to at most 1")
    support = p > 0
    p, q = p[support], q[support].clamp_min(floor)
    return float((p * (p.log() - q.log())).sum())


def kl_paper(samples: Tensor, dataset: VectorDataset, *, floor: float = KL_PAPER_FLOOR) -> float:
    """The paper's checkerboard KL of model `samples` (n, 2) against `dataset` (see the module docstring)."""
    data = kl_paper_data_masses(dataset)
    return kl_paper_divergence(data, histogram_masses(samples, kl_paper_grid(dataset)), floor)
