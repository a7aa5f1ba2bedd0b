"""`mgm-studies report` on a real small sweep (real Ray, real SQLite MLflow): its numbers are checked against the
MLflow runs they come from, and it still reports when trials diverge or fail (issue 5)."""

from __future__ import annotations

import math
import os
import re
import statistics
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mgm_studies.cli import main
from mgm_studies.reporting.place import MARKER
from mgm_studies.studies.space import parse_study_spec
from mgm_studies.studies.sweep import run_sweep

STUDY = "report_study"
LRS, HIDDEN = [0.003, 0.01, 1.0e12], [32, 2_000_000]  # lr 1e12 diverges; a 2M x 2M layer cannot be allocated
SPACE = {
    "name": STUDY,
    "base": {
        "data": {"name": "checkerboard"},
        "model": {"hidden": 32, "depth": 2, "embedding_dim": 16},
        "train": {"steps": 60, "batch_size": 64, "checkpoint_interval": 20, "ema_decays": [0.9], "log_interval": 5},
        "eval": {"metrics": ["kl"], "steps": [1, 2], "num_samples": 500, "reference_samples": 500, "interval": 30},
    },
    "metric": "kl/nfe-2",
    "mode": "min",
    "search": {"algorithm": "grid", "max_concurrent": 2},
    "space": {"train.optimizer.lr": {"grid": LRS}, "model.hidden": {"grid": HIDDEN}},
    "seeds": [0, 1],
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, ray_cluster):
    """The study swept once for the module: 12 trials, 4 finished, 2 diverged, 6 failed."""
    root = tmp_path_factory.mktemp("report")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MGM_STUDIES_CHECKPOINTS")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MGM_STUDIES_CHECKPOINTS"] = str(root / "checkpoints")
    try:
        (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
        spec = parse_study_spec(SPACE, source=root / "space.yaml")
        outcome = run_sweep(spec, storage=str(root / "ray"), verbose=0)
        assert outcome.statuses == {"finished": 4, "diverged": 2, "error": 6}
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "report"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{sweep / 'mlflow.db'}"
    try:
        assert main(["report", STUDY, "--out", str(out)]) == 0
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    return out


def _children(sweep: Path):
    client = MlflowClient(f"sqlite:///{sweep / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id], "tags.`mgm.kind` = 'trial'", max_results=100)
    return client, runs


def test_results_parquet_has_one_row_per_trial_with_the_values_mlflow_holds(sweep, report):
    _, runs = _children(sweep)
    table = pq.read_table(report / "results.parquet")
    frame = pd.read_parquet(report / "results.parquet")
    assert table.num_rows == len(frame) == len(runs) == 12
    for column in ["run_id", "status", "train.seed", "duration_s", "train.optimizer.lr", "model.hidden", "kl/nfe-2"]:
        assert column in frame.columns
    rows = frame.set_index("run_id")
    for run in runs:
        row = rows.loc[run.info.run_id]
        assert row["status"] == run.data.tags["mgm.status"]
        assert row["train.seed"] == int(run.data.params["train.seed"])
        assert row["train.optimizer.lr"] == pytest.approx(float(run.data.params["train.optimizer.lr"]))
        assert row["model.hidden"] == int(run.data.params["model.hidden"])
        assert row["duration_s"] == pytest.approx((run.info.end_time - run.info.start_time) / 1000)
        if row["status"] == "finished":
            assert row["kl/nfe-2"] == pytest.approx(run.data.metrics["kl/nfe-2"], rel=1e-12)
            assert row["kl/nfe-1"] == pytest.approx(run.data.metrics["kl/nfe-1"], rel=1e-12)
        else:  # no final metric: the diverged sentinel and the failed trials' absence are not values
            assert math.isnan(row["kl/nfe-2"])
    assert sorted(frame["status"].value_counts().items()) == [("diverged", 2), ("error", 6), ("finished", 4)]
    assert set(frame.loc[frame["status"] == "diverged", "train.optimizer.lr"]) == {1.0e12}
    assert set(frame.loc[frame["status"] == "error", "model.hidden"]) == {2_000_000}


def _md_table(text: str, caption: str) -> list[list[str]]:
    """The body rows of the Markdown table under the italic caption `caption`."""
    lines = text.splitlines()
    start = lines.index(f"*{caption}*")
    rows = []
    for line in lines[start + 4 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_ablation_tables_hold_the_means_over_seeds_of_the_mlflow_runs(sweep, report):
    _, runs = _children(sweep)
    finished = [r for r in runs if r.data.tags["mgm.status"] == "finished"]
    text = (report / "report.md").read_text()

    lr_rows = _md_table(text, "train.optimizer.lr vs kl/nfe-2 (finished trials; statistics as in the Summary)")
    assert [row[0] for row in lr_rows] == ["0.003", "0.01", "1e+12"]  # one row per value, in order
    for row, lr in zip(lr_rows, LRS, strict=True):
        values = [r.data.metrics["kl/nfe-2"] for r in finished if float(r.data.params["train.optimizer.lr"]) == lr]
        not_finished = sum(1 for r in runs if float(r.data.params["train.optimizer.lr"]) == lr) - len(values)
        assert row[3] == str(not_finished)
        if values:  # the others (model.hidden) marginalised: only hidden 32 trials finished
            assert row[1] == _mean_ci(values)
        else:
            assert row[1] == "–" and row[2] == "–"
    assert "best" in (lr_rows[0][2], lr_rows[1][2])  # one of the two trained values is the best, the other compared

    hidden_rows = _md_table(text, "model.hidden vs kl/nfe-2 (finished trials; statistics as in the Summary)")
    assert [row[0] for row in hidden_rows] == ["32", "2000000"]
    assert hidden_rows[1][1] == "–" and hidden_rows[1][3] == "6"
    # Held at the best configuration: the best lr (lowest mean over seeds) with hidden 32.
    means = {
        lr: statistics.mean(
            r.data.metrics["kl/nfe-2"] for r in finished if float(r.data.params["train.optimizer.lr"]) == lr
        )
        for lr in LRS[:2]
    }
    best_lr = min(means, key=means.get)
    at_best = [r.data.metrics["kl/nfe-2"] for r in finished if float(r.data.params["train.optimizer.lr"]) == best_lr]
    assert hidden_rows[0][4] == f"{statistics.mean(at_best):.4g} ± {statistics.stdev(at_best):.2g} (n=2)"


T_975_DF1 = 12.706205  # Student's t quantile 0.975 on 1 degree of freedom (two seeds)


def _mean_ci(values: list[float]) -> str:
    """mean ± std (n) [95 % t interval], by hand for two values."""
    assert len(values) == 2
    mean, sd = statistics.mean(values), statistics.stdev(values)
    half = T_975_DF1 * sd / math.sqrt(2)
    return f"{mean:.4g} ± {sd:.2g} (n=2) [{mean - half:.3g}, {mean + half:.3g}]"


def test_the_summary_counts_trials_by_status_and_names_the_best_configuration(sweep, report):
    _, runs = _children(sweep)
    text = (report / "report.md").read_text()
    assert "Trials: 12 — 6 error, 4 finished, 2 diverged" in text
    assert re.search(r"Time: sweep wall .+; [0-9.e-]+ CPU-hours of trials", text)
    finished = [r for r in runs if r.data.tags["mgm.status"] == "finished"]
    by_lr = {
        lr: [r.data.metrics["kl/nfe-2"] for r in finished if float(r.data.params["train.optimizer.lr"]) == lr]
        for lr in LRS[:2]
    }
    best_lr = min(by_lr, key=lambda lr: statistics.mean(by_lr[lr]))
    values = by_lr[best_lr]
    table = _md_table(text, _best_caption())
    # By metric (its convergence area after it), then steps.
    assert [row[0] for row in table] == ["kl/nfe-1", "kl/nfe-2 (optimised)", "area_kl/nfe-1", "area_kl/nfe-2"]
    best = table[1]
    assert best[:3] == [
        "kl/nfe-2 (optimised)",
        f"train.optimizer.lr={best_lr:.4g}, model.hidden=32",
        _mean_ci(values),
    ]
    other_lr = next(lr for lr in by_lr if lr != best_lr)
    assert best[3].startswith(f"train.optimizer.lr={other_lr:.4g}, model.hidden=32: ")
    # Every trial is linked to its MLflow run.
    for run in runs:
        assert f"/runs/{run.info.run_id})" in text


def _best_caption() -> str:
    return (
        "Best configuration per metric (mean over its finished trials; lower is better unless the sweep maximised it), "
        "ordered by metric then number of sampling steps"
    )


def test_the_report_embeds_its_figures_and_writes_nothing_else(report):
    html = (report / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    names = {Path(src).name for src in images}
    assert {"nfe-ladder.png", "loss-curves.png", "importance.png", "parallel-coordinates.png"} <= names
    assert "metric-vs-train-optimizer-lr.png" in names and "metric-vs-model-hidden.png" in names
    assert any(name.startswith("samples-") for name in names)
    for src in images:
        assert not src.startswith(("http:", "https:", "//")) and (report / src).is_file()
    assert sorted(p.name for p in report.iterdir()) == sorted(
        [MARKER, "figures", "index.html", "report.md", "results.parquet"]
    )
    assert sorted(p.name for p in (report / "figures").iterdir()) == sorted(names)


# Where the test run leaves the report's screenshot for a person to look at (ignored by git).
ARTIFACTS = Path(os.environ.get("MGM_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
_ROWS_JS = (
    "[Array.from(document.querySelectorAll('table.ablation'), t => [t.caption.textContent, t.tBodies[0].rows.length]),"
    " Array.from(document.querySelectorAll('h2, h3'), h => h.textContent),"
    " Array.from(document.querySelectorAll('table.ablation td'), td => td.textContent)]"
)


def test_the_html_report_opens_in_headless_chromium_with_every_image_and_one_row_per_value(report):
    from browser import open_page

    screenshot = ARTIFACTS / "report-screenshot.png"
    page = open_page(report / "index.html", screenshot=screenshot, script=_ROWS_JS)
    assert page.console_errors == [] and page.remote_requests == []
    assert len(page.images) >= 8 and all(loaded for _, loaded in page.images), page.images
    tables, headings, cells = page.value
    assert dict(tables) == {
        "train.optimizer.lr vs kl/nfe-2 (finished trials; statistics as in the Summary)": len(LRS),
        "model.hidden vs kl/nfe-2 (finished trials; statistics as in the Summary)": len(HIDDEN),
    }
    # The statistics and convergence sections render: verdicts in the ablation cells, the convergence figure.
    assert "Convergence: kl/nfe-2 during training" in headings and "Parameter importance" in headings
    assert "best" in cells and any(c.endswith(("within noise", "worse", "better")) for c in cells)
    assert any(src.endswith("figures/convergence.png") and loaded for src, loaded in page.images)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot of the report: {screenshot}")


def test_report_refuses_an_unknown_or_empty_study_and_an_unreachable_store_writing_nothing(
    sweep, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "never"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{sweep / 'mlflow.db'}")
    assert main(["report", "no_such_study", "--out", str(out)]) == 2
    assert "no study 'no_such_study'" in capsys.readouterr().err
    client = MlflowClient(f"sqlite:///{sweep / 'mlflow.db'}")
    client.create_experiment("empty_study")
    assert main(["report", "empty_study", "--out", str(out)]) == 2
    assert "has no sweep" in capsys.readouterr().err
    assert main(["report", STUDY, "--sweep", "0" * 32, "--out", str(out)]) == 2
    assert "no sweep run" in capsys.readouterr().err

    missing = tmp_path / "missing.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{missing}")
    assert main(["report", STUDY, "--out", str(out)]) == 1
    assert "no MLflow store" in capsys.readouterr().err and not missing.exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing listens
    assert main(["report", STUDY, "--out", str(out)]) == 1
    assert "cannot read the MLflow tracking store" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "reports").exists()
