"""Histogram KL: closed forms, smoothing, and independence of the bin count for piecewise-uniform densities."""

from __future__ import annotations

import math

import pytest
import torch

from mgm_studies.data import GaussianData, HistogramSpec, make_toy_dataset
from mgm_studies.metrics import histogram_kl, histogram_masses, kl_divergence

BOARD = HistogramSpec((-4.0, -4.0), (4.0, 4.0), 32)
# Unequal weights of the 8 black squares, keyed by (column, row) square index in {-2, ..., 1}.
WEIGHTS = {
    (-2, -2): 0.05, (-2, 0): 0.10, (-1, -1): 0.20, (-1, 1): 0.05,
    (0, -2): 0.15, (0, 0): 0.10, (1, -1): 0.25, (1, 1): 0.10,
}  # fmt: skip


def weighted_board_masses(bins: int) -> torch.Tensor:
    """Exact cell masses of the checkerboard with square weights WEIGHTS; cells must nest in the squares."""
    spec = BOARD.with_bins(bins)
    uniform = make_toy_dataset("checkerboard").bin_masses(spec)
    centres = (spec.edges(0)[:-1] + spec.edges(0)[1:]) / 2
    square = torch.floor(centres / 2).long().tolist()
    factor = torch.tensor([[8 * WEIGHTS.get((i, j), 0.0) for j in square] for i in square], dtype=torch.float64)
    return torch.cat([uniform[:-1] * factor.flatten(), uniform[-1:]])


def test_identical_histograms_have_zero_kl() -> None:
    p = torch.tensor([0.1, 0.0, 0.6, 0.3])
    assert kl_divergence(p, p) == 0.0
    assert kl_divergence(p, p, eps=1e-3) == 0.0


def test_two_bin_closed_form() -> None:
    p, q = torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([0.9, 0.1], dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kl_divergence(p, q) == pytest.approx(expected, rel=1e-12)
    # Counts are normalised like masses.
    assert kl_divergence(p * 10, q * 30) == pytest.approx(expected, rel=1e-12)


def test_zero_mass_conventions() -> None:
    # p = 0 terms contribute 0; q = 0 where p > 0 is infinite without smoothing and finite with it.
    assert kl_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])) == pytest.approx(math.log(2))
    assert kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])) == math.inf
    assert math.isfinite(kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), eps=1e-6))


def test_eps_adds_to_every_bin_and_renormalises() -> None:
    p, q, eps = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([1.0, 0.0, 0.0]), 0.1
    ps = torch.tensor([0.6, 0.6, 0.1], dtype=torch.float64) / 1.3
    qs = torch.tensor([1.1, 0.1, 0.1], dtype=torch.float64) / 1.3
    expected = float((ps * (ps / qs).log()).sum())
    assert kl_divergence(p, q, eps=eps) == pytest.approx(expected, rel=1e-12)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        kl_divergence(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="non-negative"):
        kl_divergence(torch.tensor([1.0, -0.1]), torch.ones(2))
    with pytest.raises(ValueError, match="eps"):
        kl_divergence(torch.ones(2), torch.ones(2), eps=-1.0)


@pytest.mark.parametrize("bins", [8, 16, 32, 64])
def test_kl_of_bin_aligned_piecewise_uniform_densities_does_not_depend_on_bins(bins: int) -> None:
    p = make_toy_dataset("checkerboard").bin_masses(BOARD.with_bins(bins))
    q = weighted_board_masses(bins)
    assert q.sum().item() == pytest.approx(1.0)
    # Closed form: both are uniform within each square, so KL = sum_squares (1/8) ln((1/8) / w).
    expected = sum(0.125 * math.log(0.125 / w) for w in WEIGHTS.values())
    assert kl_divergence(p, q) == pytest.approx(expected, rel=1e-9)


def test_histogram_masses_layout() -> None:
    spec = HistogramSpec((0.0, 0.0), (2.0, 2.0), 2)
    points = torch.tensor([[0.5, 1.5], [1.5, 0.5], [1.5, 0.5], [2.0, 2.0], [3.0, 0.5], [float("nan"), 0.5]])
    # Row-major cells (first axis slowest); the upper edge belongs to the last cell; NaN and beyond-box go outside.
    expected = torch.tensor([0.0, 1.0, 2.0, 1.0, 2.0], dtype=torch.float64) / 6
    masses = histogram_masses(points, spec)
    assert masses.dtype == torch.float64 and torch.equal(masses, expected)
    reference = torch.histogramdd(points[:4], bins=[2, 2], range=[0.0, 2.0, 0.0, 2.0]).hist.double() / 6
    assert torch.allclose(masses[:-1].reshape(2, 2), reference)
    one_d = histogram_masses(torch.tensor([[0.1], [0.9], [0.6], [-1.0]]), HistogramSpec((0.0,), (1.0,), 2))
    assert torch.equal(one_d, torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64))
    with pytest.raises(ValueError):
        histogram_masses(torch.zeros(4, 3), HistogramSpec((0.0,) * 3, (1.0,) * 3, 2))


def test_histogram_kl_uses_exact_masses_and_the_declared_box() -> None:
    board = make_toy_dataset("checkerboard")
    samples = board.sample(100_000, torch.Generator().manual_seed(0))
    value = histogram_kl(samples, board, eps=0.0)
    assert value == pytest.approx(kl_divergence(board.bin_masses(board.histogram), histogram_masses(samples, BOARD)))
    # Sampling noise only: about (occupied cells - 1) / (2 n) = 511 / 200k.
    assert 0 < value < 0.005
    shifted = samples + torch.tensor([2.0, 0.0])  # black squares onto white ones
    assert histogram_kl(shifted, board) > 5.0
    assert histogram_kl(samples, board, bins=8, eps=0.0) < value  # coarser cells, less sampling noise


def test_histogram_kl_falls_back_to_a_reference_sample() -> None:
    correlated = GaussianData([0.0, 0.0], [[1.0, 0.8], [0.8, 1.0]])
    assert correlated.bin_masses(correlated.histogram) is None
    samples = correlated.sample(50_000, torch.Generator().manual_seed(1))
    same = histogram_kl(samples, correlated, reference_size=50_000, generator=torch.Generator().manual_seed(2))
    assert 0 < same < 0.05
    assert same == histogram_kl(samples, correlated, reference_size=50_000, generator=torch.Generator().manual_seed(2))
    independent = GaussianData([0.0, 0.0]).sample(50_000, torch.Generator().manual_seed(1))
    assert histogram_kl(independent, correlated, reference_size=50_000) > 5 * same


def test_histogram_kl_needs_a_histogram() -> None:
    with pytest.raises(ValueError, match="histogram"):
        histogram_kl(torch.zeros(10, 3), GaussianData([0.0, 0.0, 0.0]))
