"""Sliced W2 and MMD: zero for equal samples, closed forms for shifts, symmetry, monotonicity."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mgm_studies.metrics import mmd, sliced_wasserstein2


def normal(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_sw2_is_zero_for_identical_samples_and_for_the_same_empirical_law() -> None:
    x = normal(2000, 2, 0)
    assert sliced_wasserstein2(x, x) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein2(x, x[torch.randperm(2000)]) == pytest.approx(0.0, abs=1e-12)
    # Unequal sizes: every point twice is the same empirical law.
    assert sliced_wasserstein2(x, torch.cat([x, x])) == pytest.approx(0.0, abs=1e-12)


def test_sw2_unequal_sizes_closed_form_in_one_dimension() -> None:
    # Quantile functions of U{0, 1} and U{0, 0.5, 1} differ by 0.5 on [1/3, 2/3): W2^2 = 0.25 / 3.
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [0.5], [0.0]])
    assert sliced_wasserstein2(x, y) == pytest.approx(math.sqrt(0.25 / 3), rel=1e-12)


@pytest.mark.parametrize("shift", [[3.0], [1.0, 2.0], [1.0, -1.0, 0.5, 2.0]])
def test_sw2_of_a_pure_shift_is_norm_over_sqrt_dim(shift: list[float]) -> None:
    # The projected shift is <m, theta>; E <m, theta>^2 = |m|^2 / d over the unit sphere.
    m = torch.tensor(shift)
    x = normal(1000, len(shift), 1)
    expected = m.norm().item() / math.sqrt(len(shift))
    assert sliced_wasserstein2(x, x + m, num_projections=4096) == pytest.approx(expected, rel=0.02)


def test_sw2_of_shifted_gaussians_and_symmetry() -> None:
    m = torch.tensor([2.0, -1.0])
    x, y = normal(10_000, 2, 2), normal(10_000, 2, 3) + m
    expected = m.norm().item() / math.sqrt(2)
    assert sliced_wasserstein2(x, y, num_projections=1024) == pytest.approx(expected, rel=0.03)
    forward = sliced_wasserstein2(x, y[:7_000], generator=torch.Generator().manual_seed(5))
    backward = sliced_wasserstein2(y[:7_000], x, generator=torch.Generator().manual_seed(5))
    assert forward == pytest.approx(backward, rel=1e-12)


def test_mmd_is_near_zero_for_one_law_and_grows_with_the_shift() -> None:
    x, y = normal(3000, 2, 4), normal(3000, 2, 5)
    same = mmd(x, y)
    assert abs(same) < 2e-3
    values = [mmd(x, y + torch.tensor([s, 0.0])) for s in (0.25, 0.5, 1.0, 2.0)]
    assert values[0] > 10 * abs(same)
    assert all(a < b for a, b in itertools.pairwise(values))


def test_mmd_matches_the_unbiased_estimator_computed_directly() -> None:
    # More rows than one kernel block, so the blocked sums are exercised.
    x, y = normal(1500, 3, 6), normal(1200, 3, 7) * 1.5
    bandwidths = [0.5, 2.0]

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        dist_sq = torch.cdist(a.double(), b.double()).square()
        return sum(torch.exp(-dist_sq / (2 * h * h)) for h in bandwidths)

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = len(x), len(y)
    expected = (kxx.sum() - kxx.trace()) / (n * (n - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1)) - 2 * kxy.mean()
    assert mmd(x, y, bandwidths=bandwidths) == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
    assert mmd(x, y, bandwidths=bandwidths) == pytest.approx(mmd(y, x, bandwidths=bandwidths), rel=1e-9)


def test_mmd_subsamples_to_max_points_with_the_generator() -> None:
    x, y = normal(5000, 2, 8), normal(5000, 2, 9) + 0.5
    first = mmd(x, y, max_points=500, generator=torch.Generator().manual_seed(0))
    assert first == mmd(x, y, max_points=500, generator=torch.Generator().manual_seed(0))
    assert first != mmd(x, y, max_points=500, generator=torch.Generator().manual_seed(1))


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError):
        sliced_wasserstein2(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError):
        mmd(torch.zeros(5, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError):
        mmd(torch.zeros(5, 2), torch.zeros(5, 2), bandwidths=[0.0])
