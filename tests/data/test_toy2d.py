"""The 2-D toys: shapes, determinism, declared boxes, and the checkerboard's exact masses."""

from __future__ import annotations

import pytest
import torch

from mgm_studies.data import TOY_DATASETS, DataError, HistogramSpec, make_toy_dataset
from mgm_studies.metrics import histogram_masses

TOY_NAMES = [name for name in TOY_DATASETS if name != "gaussian"]


def make(name: str):
    return make_toy_dataset(name, mean=[0.5, -1.0]) if name == "gaussian" else make_toy_dataset(name)


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_samples_are_float32_pairs_determined_by_the_generator(name: str) -> None:
    dataset = make(name)
    first = dataset.sample(1000, torch.Generator().manual_seed(3))
    again = dataset.sample(1000, torch.Generator().manual_seed(3))
    other = dataset.sample(1000, torch.Generator().manual_seed(4))
    assert first.shape == (1000, 2) and first.dtype == torch.float32 and first.device.type == "cpu"
    assert dataset.dim == 2 and dataset.name == name
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_sampling_leaves_the_global_rng_alone(name: str) -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    make(name).sample(100, torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_declared_box_holds_the_mass(name: str) -> None:
    dataset = make(name)
    spec = dataset.histogram
    assert spec is not None and spec.dim == 2
    masses = histogram_masses(dataset.sample(50_000, torch.Generator().manual_seed(0)), spec)
    assert masses[-1] < 0.005
    # The bins resolve the data: at 20k samples the occupied cells hold 10 or more samples on average.
    occupied = int((masses[:-1] > 0).sum())
    assert 20_000 / occupied >= 10


def test_checkerboard_box_is_the_board() -> None:
    assert make_toy_dataset("checkerboard").histogram == HistogramSpec((-4.0, -4.0), (4.0, 4.0), 32)


def test_paper_checkerboard_is_the_board_of_arxiv_2505_18825() -> None:
    # nmboffi/flow-maps `sample_checkerboard(n, key, n_squares=4)`: u on [0, 1)^2 kept where floor(4 u_1) + floor(4 u_2)
    # is even, returned as 2 u - 1.
    dataset = make_toy_dataset("checkerboard_paper")
    assert dataset.histogram == HistogramSpec((-1.0, -1.0), (1.0, 1.0), 32)
    x = dataset.sample(100_000, torch.Generator().manual_seed(0))
    u = (x.double() + 1) / 2
    assert ((u >= 0) & (u <= 1)).all()
    square = torch.floor(4 * u).long().clamp(max=3)
    assert ((square[:, 0] + square[:, 1]) % 2 == 0).all()
    spec = dataset.histogram.with_bins(50)  # square edges at +-0.5 cut cells: exact masses of cut cells too
    exact = dataset.bin_masses(spec)
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-12)
    empirical = histogram_masses(dataset.sample(200_000, torch.Generator().manual_seed(1)), spec)
    assert (exact - empirical).abs().max() < 5 * (exact.max() / 200_000) ** 0.5


def test_checkerboard_samples_never_land_on_a_white_square() -> None:
    x = make_toy_dataset("checkerboard").sample(100_000, torch.Generator().manual_seed(0))
    assert ((x >= -4) & (x <= 4)).all()
    cell = torch.floor(x / 2).long()  # square index in {-2, ..., 1} per axis
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()
    # All 8 black squares are used, about equally.
    counts = torch.unique(cell, dim=0, return_counts=True)[1]
    assert len(counts) == 8 and (counts / len(x) - 1 / 8).abs().max() < 0.01


@pytest.mark.parametrize("bins", [8, 32, 50])
def test_checkerboard_exact_masses_match_a_large_sample(bins: int) -> None:
    dataset = make_toy_dataset("checkerboard")
    spec = dataset.histogram.with_bins(bins)
    exact = dataset.bin_masses(spec)
    assert exact.shape == (bins**2 + 1,) and exact.dtype == torch.float64
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert exact[-1].item() == pytest.approx(0.0, abs=1e-12)
    empirical = histogram_masses(dataset.sample(200_000, torch.Generator().manual_seed(1)), spec)
    # Five binomial standard deviations of the fullest cell.
    assert (exact - empirical).abs().max() < 5 * (exact.max() / 200_000) ** 0.5


def test_checkerboard_exact_masses_of_a_partial_box() -> None:
    dataset = make_toy_dataset("checkerboard")
    # [0, 4] x [0, 4] holds the black squares [0, 2]^2 and [2, 4]^2: mass 2/8, one cell each.
    masses = dataset.bin_masses(HistogramSpec((0.0, 0.0), (4.0, 4.0), 2))
    assert torch.allclose(masses, torch.tensor([0.125, 0.0, 0.0, 0.125, 0.75], dtype=torch.float64))
    # A box larger than the board: the outside mass is 0 and the cells outside the board are empty.
    masses = dataset.bin_masses(HistogramSpec((-8.0, -8.0), (8.0, 8.0), 4))
    assert masses[-1].item() == pytest.approx(0.0, abs=1e-12)
    assert masses[[5, 6, 9, 10]].sum().item() == pytest.approx(1.0)


def test_unknown_name_and_bad_options_are_data_errors() -> None:
    with pytest.raises(DataError) as info:
        make_toy_dataset("chequerboard")
    assert info.value.field == "name" and "chequerboard" in info.value.message and "checkerboard" in str(info.value)
    with pytest.raises(DataError) as info:
        make_toy_dataset("moons", radius=2.0)
    assert info.value.field == "options" and "radius" in info.value.message


def test_options_reach_the_dataset() -> None:
    tight = make_toy_dataset("eight_gaussians", radius=2.0, std=0.01)
    x = tight.sample(1000, torch.Generator().manual_seed(0))
    assert torch.allclose(x.norm(dim=1), torch.full((1000,), 2.0), atol=0.05)
    assert tight.histogram.high[0] < 6.0
