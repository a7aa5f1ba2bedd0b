"""The report's numbers on hand-made trial tables, where every mean and std is known in closed form."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from mgm_studies.reporting import tables as T
from mgm_studies.reporting.collect import StudyData, portable, ui_address
from mgm_studies.reporting.pareto import pareto


def study(rows: list[dict], axes: list[str], metric: str = "kl/nfe-1", mode: str = "min") -> StudyData:
    trials = pd.DataFrame(rows)
    for column, default in (("run_id", None), ("url", "u"), ("duration_s", 3600.0), ("cpus", 1.0), ("gpus", 0.0)):
        if column not in trials:
            trials[column] = [f"r{i}" for i in range(len(trials))] if default is None else default
    return StudyData(
        study="s",
        tracking_uri="sqlite:///x.db",
        experiment_id="1",
        sweep_run_id="p",
        sweep_name="s-1",
        sweep_end=None,
        search={},
        axes=axes,
        metrics=[metric],
        modes=[mode],
        eval_metrics=[metric],
        trials=trials,
        ui_address="http://127.0.0.1:5000",
    )


# Two axes, two seeds each; (a, b) -> values over seeds.
GRID = {
    ("x", 1): [1.0, 3.0],  # mean 2
    ("x", 2): [5.0, 7.0],  # mean 6
    ("y", 1): [0.5, 1.5],  # mean 1   <- best (min)
    ("y", 2): [8.0, 10.0],  # mean 9
}


def grid_rows(extra: list[dict] = ()) -> list[dict]:
    rows = [
        {"a": a, "b": b, "status": "finished", "kl/nfe-1": v, "train.seed": seed}
        for (a, b), values in GRID.items()
        for seed, v in enumerate(values)
    ]
    return rows + list(extra)


def test_levels_keep_choices_in_order_sort_numbers_and_bin_sampled_ranges():
    rows = [{"c": c, "n": n, "u": 0.1 * i, "status": "finished", "kl/nfe-1": 1.0} for i, (c, n) in enumerate(
        [("zeta", 3), ("alpha", 1), ("zeta", 2), ("alpha", 3), ("mid", 1), ("mid", 2), ("zeta", 1), ("alpha", 2),
         ("mid", 3), ("zeta", 2), ("alpha", 1), ("mid", 3)]
    )]  # fmt: skip
    leveled, order = T.levels(study(rows, ["c", "n", "u"]))
    assert order["c"] == ["zeta", "alpha", "mid"]  # first appearance, as the space lists them
    assert order["n"] == ["1", "2", "3"]
    assert len(order["u"]) == T.BINS  # 12 distinct sampled values -> 4 quantile bins
    assert leveled["u"].value_counts().tolist() == [3, 3, 3, 3]
    assert leveled.loc[0, "u"] == order["u"][0] and leveled.loc[11, "u"] == order["u"][-1]


def test_best_configuration_is_the_best_mean_over_seeds_not_the_best_single_trial():
    rows = grid_rows([{"a": "x", "b": 2, "status": "finished", "kl/nfe-1": 0.1}])  # one lucky trial: mean of x,2 = 4.1
    leveled, _ = T.levels(study(rows, ["a", "b"]))
    best = T.best_configuration(leveled, ["a", "b"], "kl/nfe-1", "min")
    assert best.config == {"a": "y", "b": "1"} and best.mean == pytest.approx(1.0) and best.n == 2
    assert best.std == pytest.approx(math.sqrt(0.5))
    assert T.best_configuration(leveled, ["a", "b"], "kl/nfe-1", "max").config == {"a": "y", "b": "2"}


def test_ablation_marginalises_the_other_axes_and_holds_them_at_the_best():
    diverged = {"a": "x", "b": 1, "status": "diverged", "kl/nfe-1": float("nan")}
    leveled, order = T.levels(study(grid_rows([diverged]), ["a", "b"]))
    table = T.ablation(leveled, order, ["a", "b"], "a", "kl/nfe-1", "min")
    rows = table.rows.set_index("level")
    # a = x: trials 1, 3, 5, 7 (b marginalised); a = y: 0.5, 1.5, 8, 10.
    assert rows.loc["x", "mean"] == pytest.approx(4.0) and rows.loc["x", "n"] == 4
    assert rows.loc["x", "std"] == pytest.approx(pd.Series([1.0, 3.0, 5.0, 7.0]).std())
    assert rows.loc["x", "not_finished"] == 1 and rows.loc["y", "not_finished"] == 0
    assert rows.loc["y", "mean"] == pytest.approx(5.0)
    # Held at the best b (= 1): a = x -> 1, 3; a = y -> 0.5, 1.5.
    assert rows.loc["x", "best_mean"] == pytest.approx(2.0) and rows.loc["x", "best_n"] == 2
    assert rows.loc["y", "best_mean"] == pytest.approx(1.0)
    by_b = T.ablation(leveled, order, ["a", "b"], "b", "kl/nfe-1", "min").rows.set_index("level")
    assert list(by_b.index) == ["1", "2"]
    assert by_b.loc["2", "best_mean"] == pytest.approx(9.0)  # a held at y


def test_a_level_without_finished_trials_has_no_mean_and_counts_its_failures():
    failed = [{"a": "z", "b": 1, "status": "error", "kl/nfe-1": float("nan")} for _ in range(3)]
    leveled, order = T.levels(study(grid_rows(failed), ["a", "b"]))
    row = T.ablation(leveled, order, ["a", "b"], "a", "kl/nfe-1", "min").rows.set_index("level").loc["z"]
    assert math.isnan(row["mean"]) and row["n"] == 0 and row["not_finished"] == 3


def test_compute_hours_are_gpu_hours_when_any_trial_held_a_gpu():
    rows = [{"a": "x", "status": "finished", "kl/nfe-1": 1.0, "duration_s": 1800.0, "cpus": 2.0, "gpus": 0.0}] * 2
    assert T.compute_hours(study(rows, ["a"])) == (pytest.approx(2.0), "CPU")
    rows[1] = {**rows[1], "gpus": 4.0}
    assert T.compute_hours(study(rows, ["a"])) == (pytest.approx(2.0), "GPU")


def test_run_links_point_at_the_mlflow_ui_of_the_store():
    assert ui_address("http://mlflow.internal:5000/") == ("http://mlflow.internal:5000", None)
    address, hint = ui_address("sqlite:////data/mlflow.db")
    # No absolute path of the machine that built the report: outside the working folder, the file's name alone.
    assert address == "http://127.0.0.1:5000" and "mlflow ui --backend-store-uri sqlite:///mlflow.db " in hint
    here = ui_address(f"sqlite:///{Path.cwd() / 'out' / 'mlflow.db'}")[1]
    assert "--backend-store-uri sqlite:///out/mlflow.db " in here  # under it: relative to it
    assert portable("http://user:secret@mlflow.internal:5000") == "http://mlflow.internal:5000"
    data = study(grid_rows(), ["a", "b"])
    assert data.run_url("abc") == "http://127.0.0.1:5000/#/experiments/1/runs/abc"


def test_the_pareto_front_holds_the_configurations_no_other_dominates():
    # Means (m1, m2), two seeds each: A (1, 5), B (2, 2), C (3, 3) (B is better on both), D (5, 1).
    means = {"A": (1.0, 5.0), "B": (2.0, 2.0), "C": (3.0, 3.0), "D": (5.0, 1.0)}
    rows = [
        {"a": name, "status": "finished", "m1": m1 + d, "m2": m2 - d, "train.seed": seed}
        for name, (m1, m2) in means.items()
        for seed, d in enumerate((-0.5, 0.5))
    ]
    rows.append({"a": "E", "status": "error", "m1": math.nan, "m2": math.nan, "train.seed": 0})
    leveled, _ = T.levels(study(rows, ["a"], metric="m1"))
    front = pareto(leveled, ["a"], ["m1", "m2"], ["min", "min"])
    table = front.rows.set_index("a")
    assert table.loc["B", "m1"] == pytest.approx(2.0) and table.loc["B", "n"] == 2 and "E" not in table.index
    assert table["front"].to_dict() == {"A": True, "B": True, "C": False, "D": True}
    # Maximising m2 instead: A (m2 = 5, the highest, and the lowest m1) dominates everything else.
    assert pareto(leveled, ["a"], ["m1", "m2"], ["min", "max"]).rows.set_index("a")["front"].to_dict() == {
        "A": True, "B": False, "C": False, "D": False
    }  # fmt: skip
