"""What every vector dataset provides: samples, a declared histogram box for KL, and optionally exact bin masses.

Histogram cells are indexed row-major (the first data axis varies slowest), the order of
`torch.histogramdd(...).hist.flatten()`; a flattened mass vector has `bins**d + 1` entries, the last one being the
mass outside the box. `mgm_studies.metrics.kl.histogram_masses` uses the same layout.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class HistogramSpec:
    """An axis-aligned box [low, high] cut into `bins` equal cells per axis.

    Cell k of axis i covers [low_i + k w_i, low_i + (k + 1) w_i) with w_i = (high_i - low_i) / bins; the last cell
    also holds its upper edge.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    bins: int

    def __post_init__(self) -> None:
        # Accept lists from callers but store tuples, so that the spec stays hashable.
        object.__setattr__(self, "low", tuple(float(v) for v in self.low))
        object.__setattr__(self, "high", tuple(float(v) for v in self.high))
        if len(self.low) == 0 or len(self.low) != len(self.high):
            raise ValueError(f"low and high need the same non-zero length, got {self.low} and {self.high}")
        for lo, hi in zip(self.low, self.high, strict=True):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"need finite low < high on every axis, got low={self.low} high={self.high}")
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 1:
            raise ValueError(f"bins must be a positive integer, got {self.bins!r}")

    @property
    def dim(self) -> int:
        """Number of data dimensions d."""
        return len(self.low)

    @property
    def num_cells(self) -> int:
        """bins**d, the number of cells inside the box (the mass vector has one more entry)."""
        return self.bins**self.dim

    def edges(self, axis: int) -> Tensor:
        """Cell edges along `axis`, shape (bins + 1,), float64."""
        return torch.linspace(self.low[axis], self.high[axis], self.bins + 1, dtype=torch.float64)

    def with_bins(self, bins: int) -> HistogramSpec:
        """The same box with another number of bins per axis."""
        return dataclasses.replace(self, bins=bins)


class DataError(ValueError):
    """Bad user data. `field` is the config field at fault relative to the data config, e.g. "path" or "columns"."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class VectorDataset(abc.ABC):
    """A distribution over R^d that can be sampled reproducibly.

    Attributes:
        name: short name, as in the run config.
        dim: data dimension d.
        histogram: the box and bins on which KL is computed; None when KL is undefined (d > 2).
    """

    name: str
    dim: int
    histogram: HistogramSpec | None

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """(n, d) float32 on CPU, drawn with `generator` only (deterministic given generator state)."""

    def sample_on(self, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """`sample(n, generator)` on `device`, the same values. Sets held in memory override it to gather from a copy
        kept on the device, so a GPU is not fed across the bus every step."""
        return self.sample(n, generator).to(device, non_blocking=True)

    def bin_masses(self, spec: HistogramSpec) -> Tensor | None:
        """Exact probability of each cell of `spec`, shape (bins**d + 1,), float64, last entry = mass outside.

        None when not known in closed form (the default); KL then uses a reference sample.
        """
        return None

    def reference(self, n: int, generator: torch.Generator) -> Tensor:
        """(n', d) float32 reference sample for distances, and for KL when exact masses are unknown."""
        return self.sample(n, generator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def build_registered(registry: Mapping[str, Callable[..., VectorDataset]], kind: str, name: str, **options):
    """The dataset registered as `name` in `registry`, built with `options`.

    Raises DataError("name") for an unknown name, DataError("options") for options the dataset does not take; `kind`
    ("toy", "image") names the registry in the messages.
    """
    factory = registry.get(name)
    if factory is None:
        raise DataError("name", f"unknown {kind} dataset {name!r}; known: {', '.join(sorted(registry))}")
    # Bind first so that a wrong option is reported as such, while a TypeError inside the dataset stays a bug.
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        raise DataError("options", f"bad options for {kind} dataset {name!r}: {exc}") from None
    return factory(**options)


def data_shape(dataset: VectorDataset) -> tuple[int, ...]:
    """The shape of one sample: (d,) for vectors, (C, H, W) for images (image datasets carry `shape`)."""
    shape = getattr(dataset, "shape", None)
    return tuple(shape) if shape is not None else (dataset.dim,)


def check_spec_dim(spec: HistogramSpec, dim: int) -> None:
    """Raise ValueError if `spec` is not a box in R^dim."""
    if spec.dim != dim:
        raise ValueError(f"histogram spec has dimension {spec.dim}, the data has dimension {dim}")


def outer_masses(axis_probs: list[Tensor]) -> Tensor:
    """Cell masses of a product distribution from per-axis interval probabilities.

    Args:
        axis_probs: one (bins,) float64 tensor per axis: the probability of each interval along that axis.
    Returns:
        (bins**d + 1,) float64, row-major cells, then the outside mass 1 - sum (clamped at 0).
    """
    cells = axis_probs[0]
    for probs in axis_probs[1:]:
        cells = torch.outer(cells, probs).flatten()
    return with_outside(cells)


def with_outside(cells: Tensor) -> Tensor:
    """Append the outside mass 1 - sum(cells) (clamped at 0: rounding can overshoot) to flattened cell masses."""
    outside = (1.0 - cells.sum()).clamp_min(0.0)
    return torch.cat([cells, outside.reshape(1)])
