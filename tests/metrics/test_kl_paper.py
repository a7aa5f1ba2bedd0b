"""The checkerboard KL of arXiv 2505.18825 (`kl_paper`): its grid and data masses counted by hand, hand-computed
values, the sampling-noise floor of exact samples, and the metric through evaluation under a name every layer takes."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import small_config

from mgm_studies import evaluation
from mgm_studies.builders import build_model
from mgm_studies.config import parse_run_config
from mgm_studies.configbase import ConfigError
from mgm_studies.data import GaussianData, HistogramSpec, data_shape, make_toy_dataset
from mgm_studies.metrics import kl_paper
from mgm_studies.metrics.kl_paper import (
    KL_PAPER_FLOOR,
    kl_paper_data_masses,
    kl_paper_divergence,
    kl_paper_grid,
)
from mgm_studies.runs import build_run, trainer_for

CPU = torch.device("cpu")
N = 64_000  # the paper's number of samples


@pytest.fixture(scope="module")
def board():
    return make_toy_dataset("checkerboard_paper")


def test_the_grid_is_50_by_50_over_the_board(board) -> None:
    assert kl_paper_grid(board) == HistogramSpec((-1.0, -1.0), (1.0, 1.0), 50)
    assert kl_paper_grid(make_toy_dataset("checkerboard")) == HistogramSpec((-4.0, -4.0), (4.0, 4.0), 50)


def test_data_masses_are_the_board_integrated_over_each_cell(board) -> None:
    # Per axis, the 50 cells of 0.04 are 12 inside each of the 4 squares of 0.5, and two (12 and 37) cut in half by
    # the square edges at -0.5 and 0.5 (the edge at 0 falls on a cell edge). A cell inside a black square holds
    # 0.04^2 x 1/2 = 8e-4; a cut cell covers one black half: 4e-4; only cells inside white squares (8 x 12^2) are
    # empty, so K = 2500 - 1152 = 1348 cells hold data.
    p = kl_paper_data_masses(board)
    assert p.shape == (2501,) and p.dtype == torch.float64
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12) and p[-1].item() == pytest.approx(0.0, abs=1e-12)
    cells = p[:-1].reshape(50, 50)
    held = cells[cells > 0]
    whole, half = torch.tensor(8e-4, dtype=torch.float64), torch.tensor(4e-4, dtype=torch.float64)
    torch.testing.assert_close(held, torch.where(held > 6e-4, whole, half), rtol=1e-9, atol=0.0)
    assert int((cells > 6e-4).sum()) == 8 * 12**2 and int(((cells > 0) & (cells < 6e-4)).sum()) == 196
    assert int((cells > 0).sum()) == 1348
    assert cells[0, 0].item() == pytest.approx(8e-4) and cells[0, 12].item() == pytest.approx(4e-4)
    assert cells[0, 13].item() == 0.0  # x in [-1, -0.96], y in [-0.48, -0.44]: the white square (0, 1)


def test_the_paper_board_is_ours_scaled_by_a_quarter(board) -> None:
    ours = make_toy_dataset("checkerboard")
    x = board.sample(10_000, torch.Generator().manual_seed(5))
    assert torch.equal(4 * x, ours.sample(10_000, torch.Generator().manual_seed(5)))
    # Cells map to cells under the scaling, so the metric does not see it.
    samples = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(6))
    assert kl_paper(4 * samples, ours) == pytest.approx(kl_paper(samples, board), abs=1e-4)


def test_hand_computed_values() -> None:
    # Three cells then the overflow entry; p has no mass outside.
    p = torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    same = kl_paper_divergence(p, p)
    assert same == 0.0
    q = torch.tensor([0.25, 0.25, 0.5, 0.0], dtype=torch.float64)
    assert kl_paper_divergence(p, q) == pytest.approx(0.5 * math.log(2) + 0.25 * math.log(0.5), rel=1e-12)
    # A quarter of the model outside the grid: q is not renormalised, so the inside cells lose that mass.
    outside = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    assert kl_paper_divergence(p, outside) == pytest.approx(0.5 * math.log(2), rel=1e-12)
    # An empty cell with data mass is floored at 1e-10 (a cell with model mass and no data adds nothing).
    empty = torch.tensor([0.75, 0.0, 0.25, 0.0], dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.25 * math.log(0.25 / KL_PAPER_FLOOR)
    assert kl_paper_divergence(p, empty) == pytest.approx(expected, rel=1e-12)
    assert kl_paper_divergence(p, empty, floor=1e-3) == pytest.approx(
        0.5 * math.log(0.5 / 0.75) + 0.25 * math.log(0.25 / 1e-3), rel=1e-12
    )


def test_a_hand_built_sample_on_the_board(board) -> None:
    # One sample at the centre of each of the 1152 whole cells, none in the 196 half cells: q = 1/1152 on the
    # whole cells, floored on the half cells.
    p = kl_paper_data_masses(board)[:-1].reshape(50, 50)
    rows, columns = torch.nonzero(p > 6e-4, as_tuple=True)
    centres = torch.stack([rows, columns], dim=1).to(torch.float64) * 0.04 - 1.0 + 0.02
    expected = 1152 * 8e-4 * math.log(8e-4 * 1152) + 196 * 4e-4 * math.log(4e-4 / KL_PAPER_FLOOR)
    assert kl_paper(centres.float(), board) == pytest.approx(expected, rel=1e-9)
    # Non-finite samples count as outside, like samples off the board.
    spoiled = torch.cat([centres.float(), torch.tensor([[math.nan, 0.0], [5.0, 0.0]])])
    assert kl_paper(spoiled, board) == pytest.approx(expected + 1152 * 8e-4 * math.log(1154 / 1152), rel=1e-9)


def test_exact_samples_score_only_their_sampling_noise(board) -> None:
    # For exact samples 2N KL is about chi-square with K - 1 degrees of freedom, plus a 1/N^2 term
    # (5/12) sum_i 1/p_i / N^2 of the expansion's third and fourth orders; five spreads either side.
    p = kl_paper_data_masses(board)
    support = p[p > 0]
    k = len(support)
    centre = (k - 1) / (2 * N) + 5 / 12 * (1 / support).sum().item() / N**2
    spread = math.sqrt(2 * (k - 1)) / (2 * N)
    value = kl_paper(board.sample(N, torch.Generator().manual_seed(0)), board)
    assert abs(value - centre) < 5 * spread
    assert value < 0.012  # next to the paper's 0.068 at best: exact samples sit well under it


def test_bad_inputs_are_refused(board) -> None:
    p = kl_paper_data_masses(board)
    with pytest.raises(ValueError, match="same shape"):
        kl_paper_divergence(p, p[:-1])
    with pytest.raises(ValueError, match="floor"):
        kl_paper_divergence(p, p, floor=0.0)
    with pytest.raises(ValueError, match="model masses"):
        kl_paper_divergence(p, 2 * p)
    with pytest.raises(ValueError, match="2-D"):
        kl_paper_grid(GaussianData([0.0]))
    with pytest.raises(ValueError, match="exact cell masses"):
        kl_paper_data_masses(make_toy_dataset("moons"))


# ---------------------------------------------------------------- through configs, evaluation and the report layer
def _paper_config(**eval_fields):
    fields = {"metrics": ["kl_paper", "kl"], "steps": [1, 2], "num_samples": 3000, "reference_samples": 2000}
    return parse_run_config(small_config(data={"name": "checkerboard_paper"}, eval={**fields, **eval_fields}))


def test_evaluation_logs_kl_paper_per_nfe_and_leaves_kl_alone(monkeypatch) -> None:
    config = _paper_config()
    parts = build_run(config)
    dataset, objective = parts.dataset, parts.objective
    torch.manual_seed(0)
    model = build_model(config.model, data_shape(dataset), objective.model_kind).eval()
    monkeypatch.setattr(evaluation, "SAMPLE_CHUNK", 256)  # counts gathered over 12 chunks
    result = evaluation.evaluate(model, objective, dataset, config.eval, step=0, device=CPU)
    assert {"kl_paper/nfe-1", "kl_paper/nfe-2"} <= set(result.metrics)
    # The paper's KL of the whole draw of the same noise.
    noise = objective.interpolant.noise((3000, 2), torch.Generator().manual_seed(config.eval.seed))
    with torch.no_grad():
        x = objective.sample(model, noise, 2).x
    assert result.metrics["kl_paper/nfe-2"] == pytest.approx(kl_paper(x, dataset), rel=1e-6)
    # Asking for kl_paper too changes nothing of kl.
    alone = config.eval.model_copy(update={"metrics": ["kl"]})
    plain = evaluation.evaluate(model, objective, dataset, alone, step=0, device=CPU)
    assert plain.metrics["kl/nfe-2"] == result.metrics["kl/nfe-2"]


def test_a_trained_run_reports_kl_paper() -> None:

    config = parse_run_config(
        small_config(
            data={"name": "checkerboard_paper"},
            train={"steps": 40, "batch_size": 128, "checkpoint_interval": 40, "ema_decays": [0.9]},
            eval={"metrics": ["kl_paper"], "steps": [1, 4], "num_samples": 2000},
        )
    )
    result = trainer_for(config).run()
    assert result.status == "finished"
    assert all(math.isfinite(result.metrics[f"kl_paper/nfe-{k}"]) for k in (1, 4))


def test_the_metric_name_passes_every_metric_name_rule() -> None:
    from mgm_studies.names import eval_metric, parse_eval_metric
    from mgm_studies.studies.space import parse_study_spec

    name = eval_metric("kl_paper", 16)  # what evaluation.py names the metric
    assert name == "kl_paper/nfe-16"
    assert parse_eval_metric(name) == ("kl_paper", 16)
    base = small_config(data={"name": "checkerboard_paper"}, eval={"metrics": ["kl_paper"], "steps": [1, 16]})
    spec = parse_study_spec(
        {"name": "paper-kl", "base": base, "metric": name, "space": {"train.batch_size": {"choice": [64, 128]}}}
    )
    assert spec.metric == [name]


def test_configs_refuse_kl_paper_where_it_is_undefined() -> None:
    with pytest.raises(ConfigError) as no_exact_masses:
        build_run(parse_run_config(small_config(data={"name": "moons"}, eval={"metrics": ["kl_paper"]})))
    field, message = no_exact_masses.value.problems[0]
    assert field == "eval.metrics" and "exact cell masses" in message and "'moons'" in message
    with pytest.raises(ConfigError) as misspelt:
        parse_run_config(small_config(eval={"metrics": ["kl_papers"]}))
    assert misspelt.value.problems[0][0].startswith("eval.metrics")
