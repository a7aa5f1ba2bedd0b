"""GaussianData: moments, exact masses for a diagonal covariance, validation."""

from __future__ import annotations

import pytest
import torch

from mgm_studies.data import DataError, GaussianData, HistogramSpec
from mgm_studies.metrics import histogram_masses


def test_sample_moments_match_mean_and_cov() -> None:
    mean, cov = [1.0, -2.0, 0.5], [[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]]
    x = GaussianData(mean, cov).sample(200_000, torch.Generator().manual_seed(0)).double()
    assert torch.allclose(x.mean(dim=0), torch.tensor(mean, dtype=torch.float64), atol=0.01)
    assert torch.allclose(torch.cov(x.T), torch.tensor(cov, dtype=torch.float64), atol=0.02)


def test_histogram_box_is_five_stds_and_only_for_low_dimensions() -> None:
    data = GaussianData([1.0, 0.0], [[4.0, 0.0], [0.0, 0.25]])
    assert data.histogram == HistogramSpec((-9.0, -2.5), (11.0, 2.5), 32)
    assert GaussianData([0.0]).histogram == HistogramSpec((-5.0,), (5.0,), 32)
    assert GaussianData([0.0, 0.0, 0.0]).histogram is None


@pytest.mark.parametrize("mean, cov", [([0.3], [[2.0]]), ([1.0, -1.0], [[0.5, 0.0], [0.0, 2.0]])])
def test_diagonal_exact_masses_match_a_large_sample(mean, cov) -> None:
    data = GaussianData(mean, cov)
    exact = data.bin_masses(data.histogram)
    assert exact.shape == (32 ** len(mean) + 1,)
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert 0 <= exact[-1].item() < 1e-5
    empirical = histogram_masses(data.sample(200_000, torch.Generator().manual_seed(2)), data.histogram)
    assert (exact - empirical).abs().max() < 5 * (exact.max() / 200_000) ** 0.5  # five binomial stds
    # A box cutting the law in half along the first axis leaves half the mass outside.
    half = HistogramSpec((mean[0], *(m - 10 for m in mean[1:])), tuple(m + 10 for m in mean), 4)
    assert data.bin_masses(half)[-1].item() == pytest.approx(0.5, abs=1e-9)


def test_correlated_cov_has_no_exact_masses() -> None:
    data = GaussianData([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]])
    assert data.bin_masses(data.histogram) is None


@pytest.mark.parametrize(
    "cov, problem",
    [
        ([[1.0, 2.0], [2.0, 1.0]], "positive definite"),
        ([[1.0, 0.1], [0.0, 1.0]], "symmetric"),
        ([[1.0, 0.0, 0.0]], "2x2"),
        ([[1.0, 0.0], [0.0, float("nan")]], "finite"),
    ],
)
def test_bad_cov_is_a_data_error_naming_cov(cov, problem: str) -> None:
    with pytest.raises(DataError) as info:
        GaussianData([0.0, 0.0], cov)
    assert info.value.field == "cov" and problem in info.value.message


@pytest.mark.parametrize("mean", [[float("inf"), 0.0], [], [[0.0]]])
def test_bad_mean_is_a_data_error_naming_mean(mean) -> None:
    with pytest.raises(DataError) as info:
        GaussianData(mean)
    assert info.value.field == "mean"
