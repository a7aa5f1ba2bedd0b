"""HistogramSpec and DataError."""

from __future__ import annotations

import pytest
import torch

from mgm_studies.data import DataError, HistogramSpec, VectorDataset


def test_histogram_spec_stores_tuples_and_changes_bins() -> None:
    spec = HistogramSpec([-1, 0], [1, 2], 8)
    assert spec.low == (-1.0, 0.0) and spec.high == (1.0, 2.0) and spec.dim == 2 and spec.num_cells == 64
    assert spec.with_bins(16) == HistogramSpec((-1.0, 0.0), (1.0, 2.0), 16)
    assert torch.equal(spec.edges(1), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]).double())
    hash(spec)


@pytest.mark.parametrize(
    "low, high, bins", [((0.0,), (0.0,), 4), ((0.0, 0.0), (1.0,), 4), ((0.0,), (1.0,), 0), ((0.0,), (1.0,), 2.5)]
)
def test_histogram_spec_rejects_bad_boxes(low, high, bins) -> None:
    with pytest.raises(ValueError):
        HistogramSpec(low, high, bins)


def test_data_error_keeps_field_and_message() -> None:
    error = DataError("path", "file not found: x.npy")
    assert isinstance(error, ValueError)
    assert (error.field, error.message) == ("path", "file not found: x.npy")
    assert "x.npy" in str(error)


def test_vector_dataset_defaults() -> None:
    class Constant(VectorDataset):
        name, dim, histogram = "constant", 1, None

        def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
            return torch.zeros(n, 1)

    data = Constant()
    assert data.bin_masses(HistogramSpec((0.0,), (1.0,), 2)) is None
    assert data.reference(5, torch.Generator()).shape == (5, 1)
