"""N(mean, cov) in any dimension: the closed-form test case (exact bin masses when cov is diagonal)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mgm_studies.configbase import StrictModel
from mgm_studies.data.base import DataError, HistogramSpec, VectorDataset, check_spec_dim, outer_masses

_BINS = 32
_BOX_STDS = 5.0  # half-width of the declared box in standard deviations: outside mass < 1e-6 per axis


class GaussianData(VectorDataset):
    """N(mean, cov) in R^d.

    Args:
        mean: (d,) finite means.
        cov: (d, d) symmetric positive definite covariance; None for the identity.

    `histogram` (d <= 2 only): the box mean +- 5 std per axis, 32 bins. `bin_masses` is exact when cov is diagonal.
    """

    name = "gaussian"

    def __init__(self, mean: Sequence[float], cov: Sequence[Sequence[float]] | None = None):
        self.mean = _as_mean(mean)
        self.dim = int(self.mean.numel())
        self.cov = torch.eye(self.dim, dtype=torch.float64) if cov is None else _as_cov(cov, self.dim)
        self._chol = torch.linalg.cholesky(self.cov)
        self.std = self.cov.diagonal().sqrt()
        self.diagonal = bool(torch.count_nonzero(self.cov - torch.diag(self.cov.diagonal())) == 0)
        self.histogram = None
        if self.dim <= 2:
            low = self.mean - _BOX_STDS * self.std
            high = self.mean + _BOX_STDS * self.std
            self.histogram = HistogramSpec(tuple(low.tolist()), tuple(high.tolist()), _BINS)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.mean + z @ self._chol.T).float()

    def bin_masses(self, spec: HistogramSpec) -> Tensor | None:
        """Products of normal CDF differences per axis when cov is diagonal; None otherwise."""
        check_spec_dim(spec, self.dim)
        if not self.diagonal:
            return None
        axis_probs = []
        for axis in range(self.dim):
            cdf = torch.special.ndtr((spec.edges(axis) - self.mean[axis]) / self.std[axis])
            axis_probs.append(cdf.diff())
        return outer_masses(axis_probs)

    def __repr__(self) -> str:
        return f"GaussianData(mean={self.mean.tolist()}, cov={self.cov.tolist()})"


def _as_mean(mean: Sequence[float]) -> Tensor:
    try:
        tensor = torch.as_tensor(mean, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError("mean", f"mean must be a list of numbers: {exc}") from None
    if tensor.ndim != 1 or tensor.numel() == 0:
        raise DataError("mean", f"mean must be a non-empty list of numbers, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise DataError("mean", f"mean must be finite, got {tensor.tolist()}")
    return tensor


def _as_cov(cov: Sequence[Sequence[float]], dim: int) -> Tensor:
    try:
        tensor = torch.as_tensor(cov, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError("cov", f"cov must be a {dim}x{dim} list of lists of numbers: {exc}") from None
    if tensor.shape != (dim, dim):
        raise DataError("cov", f"cov must be {dim}x{dim} to match the mean, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise DataError("cov", "cov must be finite")
    if not torch.allclose(tensor, tensor.T, rtol=1e-9, atol=1e-12):
        raise DataError("cov", f"cov must be symmetric, got {tensor.tolist()}")
    if torch.linalg.cholesky_ex(tensor).info != 0:
        raise DataError("cov", f"cov must be positive definite, got {tensor.tolist()}")
    return (tensor + tensor.T) / 2  # exactly symmetric


class GaussianDataConfig(StrictModel):
    """N(mean, cov); cov defaults to the identity. The closed-form test case."""

    name: Literal["gaussian"]
    mean: list[float] = Field(default_factory=lambda: [0.0, 0.0], min_length=1)
    cov: list[list[float]] | None = None

    def build(self) -> GaussianData:
        return GaussianData(self.mean, self.cov)
