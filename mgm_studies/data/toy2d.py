"""The 2-D toy distributions of the flow-matching literature, and the registry that builds them by name.

Parameters follow FFJORD's `toy_data.py` (Grathwohl et al., 2019), which torchcfm and most flow-map papers reuse,
except where a docstring says otherwise. Every dataset declares the histogram box on which KL is computed: the box
holds essentially all the mass with a margin, and 32 bins per axis leave 10 or more of 20k samples in each occupied
cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from mgm_studies.configbase import StrictModel
from mgm_studies.data.base import (
    HistogramSpec,
    VectorDataset,
    build_registered,
    check_spec_dim,
    with_outside,
)
from mgm_studies.data.gaussian import GaussianData

_BINS = 32


class _Toy2D(VectorDataset):
    dim = 2

    def __init__(self, half_width: float):
        self.histogram = HistogramSpec((-half_width, -half_width), (half_width, half_width), _BINS)


class Checkerboard(_Toy2D):
    """Uniform on the 8 squares [2i, 2i+2] x [2j, 2j+2], i, j in {-2, ..., 1}, i + j even (the FFJORD board).

    Density 1/32 on the squares, 0 elsewhere; declared box [-4, 4]^2 with 32 bins. Exact bin masses for any box.
    """

    name = "checkerboard"
    square_side = 2.0  # the board is 4 x 4 squares of this side, centred on the origin

    def __init__(self) -> None:
        super().__init__(2 * self.square_side)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        # A uniform column i in {-2..1}, then a uniform row among the two of the same parity (i + j even).
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        column = torch.randint(-2, 2, (n,), generator=generator, dtype=torch.float64)
        row = 2 * torch.randint(-1, 1, (n,), generator=generator, dtype=torch.float64) + column.remainder(2)
        return (self.square_side * (torch.stack([column, row], dim=1) + u)).float()

    def bin_masses(self, spec: HistogramSpec) -> Tensor:
        """Overlap area of each cell with the black squares, times the density 1 / (8 square_side^2); the rest is
        outside."""
        check_spec_dim(spec, 2)
        starts = self.square_side * torch.arange(-2.0, 2.0, dtype=torch.float64)  # lower edges of the columns
        overlaps = [_interval_overlaps(spec.edges(axis), starts, starts + self.square_side) for axis in range(2)]
        index = torch.arange(4)
        black = ((index[:, None] + index[None, :]) % 2 == 0).to(torch.float64)  # (column, row) squares, i + j even
        cells = overlaps[0] @ black @ overlaps[1].T / (8 * self.square_side**2)
        return with_outside(cells.flatten())


class PaperCheckerboard(Checkerboard):
    """The checkerboard of arXiv 2505.18825 (Boffi, Albergo, Vanden-Eijnden, Table 1): `checkerboard` scaled by 1/4.

    Uniform on [-1, 1]^2 cut into 4 x 4 squares of side 0.5, the 8 whose indices (from the lower-left corner) have an
    even sum filled: density 1/2 there. Source: `sample_checkerboard(n, key, n_squares=4)` in the paper's code
    (nmboffi/flow-maps, `py/common/datasets.py`, read in a public copy): uniform points u on [0, 1)^2 kept where
    floor(4 u_1) + floor(4 u_2) is even, returned as 2 u - 1. Declared box: the board, [-1, 1]^2, 32 bins.
    """

    name = "checkerboard_paper"
    square_side = 0.5


def _interval_overlaps(edges: Tensor, starts: Tensor, stops: Tensor) -> Tensor:
    """(bins, k): length of the overlap of cell [edges[b], edges[b+1]] with interval [starts[j], stops[j]]."""
    low = torch.maximum(edges[:-1, None], starts[None, :])
    high = torch.minimum(edges[1:, None], stops[None, :])
    overlap = (high - low).clamp_min(0.0)
    # linspace edges carry rounding (an edge at 0 can come out as 1e-17): an overlap that short is none, not a cell
    # with mass 1e-19 that the data would seem to occupy.
    return torch.where(overlap > 1e-12 * (edges[-1] - edges[0]), overlap, 0.0)


class Moons(_Toy2D):
    """Two interleaving half circles (scikit-learn's `make_moons`), as in FFJORD: 2 * moons + (-1, -0.2).

    Raw moons: (cos t, sin t) and (1 - cos t, 0.5 - sin t), t ~ U[0, pi], equal weights, gaussian noise of std
    `noise` = 0.1 per axis; after scaling the support is about [-3, 3] x [-1.2, 1.8]. Declared box [-4, 4]^2.
    """

    name = "moons"

    def __init__(self, noise: float = 0.1) -> None:
        super().__init__(4.0)
        self.noise = noise

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        t = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        lower = torch.randint(0, 2, (n,), generator=generator, dtype=torch.bool)
        x = torch.where(lower, 1.0 - torch.cos(t), torch.cos(t))
        y = torch.where(lower, 0.5 - torch.sin(t), torch.sin(t))
        points = torch.stack([x, y], dim=1)
        points = points + self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (2.0 * points + torch.tensor([-1.0, -0.2], dtype=torch.float64)).float()


class EightGaussians(_Toy2D):
    """Equal mixture of 8 isotropic gaussians of std `std` = 0.35, centred every 45 degrees on a circle of radius
    `radius` = 4 (FFJORD uses radius 2.83, std 0.35). Declared box [-(radius + 5 std), radius + 5 std]^2.
    """

    name = "eight_gaussians"

    def __init__(self, radius: float = 4.0, std: float = 0.35) -> None:
        super().__init__(math.ceil(radius + 5 * std))
        self.radius, self.std = radius, std

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        angle = torch.randint(0, 8, (n,), generator=generator, dtype=torch.float64) * (math.pi / 4)
        centres = self.radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        noise = self.std * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (centres + noise).float()


class Spirals(_Toy2D):
    """FFJORD's "2spirals": two point-symmetric spirals of 1.5 turns.

    The angle is s = 3 pi sqrt(u), u ~ U[0, 1]; the point (-s cos s, s sin s) + U[0, 0.5]^2 (FFJORD's uncentred
    jitter), mirrored through the origin for the second spiral, divided by 3, plus gaussian noise of std
    `noise` = 0.1. Radius up to about 3.4; declared box [-4, 4]^2.
    """

    name = "spirals"

    def __init__(self, noise: float = 0.1) -> None:
        super().__init__(4.0)
        self.noise = noise

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        s = 3 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64).sqrt()
        jitter = 0.5 * torch.rand(n, 2, generator=generator, dtype=torch.float64)
        points = torch.stack([-s * torch.cos(s), s * torch.sin(s)], dim=1) + jitter
        sign = 1.0 - 2.0 * torch.randint(0, 2, (n, 1), generator=generator, dtype=torch.float64)
        noise = self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (sign * points / 3.0 + noise).float()


class Rings(_Toy2D):
    """FFJORD's "rings": 4 concentric circles of radii 0.75, 1.5, 2.25, 3, gaussian noise of std `noise` = 0.08.

    Each ring has probability 1/4 and a uniform angle (FFJORD spaces the angles evenly within a batch; i.i.d. draws
    keep the samples exchangeable). Declared box [-4, 4]^2.
    """

    name = "rings"

    def __init__(self, noise: float = 0.08) -> None:
        super().__init__(4.0)
        self.noise = noise

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        radius = 0.75 * torch.randint(1, 5, (n, 1), generator=generator, dtype=torch.float64)
        angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        points = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        noise = self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (points + noise).float()


class Pinwheel(_Toy2D):
    """FFJORD's "pinwheel": 5 arms, each a gaussian blob sheared by its radius.

    Per point: (r, w) ~ N((1, 0), diag(0.3^2, 0.1^2)), an arm k uniform in {0, ..., 4}, the angle
    2 pi k / 5 + 0.25 exp(r), and the point 2 * rotate((r, w), angle). Radius up to about 3.8; declared box [-4, 4]^2.
    The data set MGM's recipe was tuned on, outside the five of the MGM-against-si study.
    """

    name = "pinwheel"

    def __init__(self, arms: int = 5) -> None:
        super().__init__(4.0)
        self.arms = arms

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        features = torch.randn(n, 2, generator=generator, dtype=torch.float64) * torch.tensor([0.3, 0.1])
        features[:, 0] += 1.0
        arm = torch.randint(0, self.arms, (n,), generator=generator, dtype=torch.float64)
        angle = 2 * math.pi * arm / self.arms + 0.25 * features[:, 0].exp()
        cos, sin = torch.cos(angle), torch.sin(angle)
        x = cos * features[:, 0] - sin * features[:, 1]
        y = sin * features[:, 0] + cos * features[:, 1]
        return (2.0 * torch.stack([x, y], dim=1)).float()


TOY_DATASETS: dict[str, Callable[..., VectorDataset]] = {
    "checkerboard": Checkerboard,
    "checkerboard_paper": PaperCheckerboard,
    "moons": Moons,
    "eight_gaussians": EightGaussians,
    "spirals": Spirals,
    "rings": Rings,
    "pinwheel": Pinwheel,
    "gaussian": GaussianData,
}


def make_toy_dataset(name: str, **options) -> VectorDataset:
    """The toy dataset registered as `name`, built with `options` (e.g. `noise=0.05`, or `mean=[0, 0]`).

    Raises DataError("name") for an unknown name, DataError("options") for options the dataset does not take.
    """
    return build_registered(TOY_DATASETS, "toy", name, **options)


class ToyDataConfig(StrictModel):
    """A 2-D toy above, by name."""

    name: Literal["checkerboard", "checkerboard_paper", "moons", "eight_gaussians", "spirals", "rings", "pinwheel"]

    def build(self) -> VectorDataset:
        return make_toy_dataset(self.name)
