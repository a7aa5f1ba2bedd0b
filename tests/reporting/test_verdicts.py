"""Statistics in a report, on a real sweep designed so the answer is known (issue 16, part 1).

Three optimiser settings x three seeds: Adam at lr 3e-3, AdamW at lr 3e-3 with no weight decay (the same update:
bit-identical weights, so the same KL on every seed), and Adam at lr 1e-7 (barely moves from its initialisation).
The report must call the 1e-7 arm worse than the best, the two identical arms within noise of each other, and say
that the winner is not distinguishable from its runner-up; its intervals and p-values equal a hand computation.
"""

from __future__ import annotations

import math
import os
import statistics

import pytest
import yaml
from mlflow.tracking import MlflowClient
from scipy import stats as scipy_stats

from mgm_studies.cli import main
from mgm_studies.reporting.cells import p_text
from mgm_studies.studies.space import parse_study_spec
from mgm_studies.studies.sweep import run_sweep

pytestmark = pytest.mark.slow

STUDY = "verdict_study"
ARMS = [
    {"name": "adam", "lr": 3.0e-3},
    {"name": "adamw", "lr": 3.0e-3, "weight_decay": 0.0},
    {"name": "adam", "lr": 1e-7},
]
SPACE = {
    "name": STUDY,
    "base": {
        "data": {"name": "checkerboard"},
        "model": {"hidden": 32, "depth": 2, "embedding_dim": 16},
        "train": {"steps": 60, "batch_size": 64, "checkpoint_interval": 60, "ema_decays": [0.9], "log_interval": 10},
        "eval": {"metrics": ["kl"], "steps": [2], "num_samples": 500, "reference_samples": 500},
    },
    "metric": "kl/nfe-2",
    "mode": "min",
    "search": {"algorithm": "grid", "max_concurrent": 2},
    "space": {"train.optimizer": {"grid": ARMS}},
    "seeds": [0, 1, 2],
    "claims": [
        {
            "statement": "lr 3e-3 beats lr 1e-7",
            "axis": "train.optimizer",
            "best": "option-0",
            "metric": "kl/nfe-2",
            "against": ["option-2"],
        },
        {
            "statement": "Adam beats AdamW without decay",
            "axis": "train.optimizer",
            "best": "option-0",
            "metric": "kl/nfe-2",
            "against": ["option-1"],
        },
        {
            "statement": "AdamW without decay is no worse than Adam",
            "axis": "train.optimizer",
            "best": "option-1",
            "metric": "kl/nfe-2",
            "against": ["option-0"],
            "relation": "not_worse",
        },
    ],
}
T_975_DF2 = 4.302653  # Student's t quantile 0.975 on 2 degrees of freedom (three seeds)


@pytest.fixture(scope="module")
def report(tmp_path_factory, ray_cluster):
    root = tmp_path_factory.mktemp("verdicts")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MGM_STUDIES_CHECKPOINTS")}
    os.environ.update(MLFLOW_TRACKING_URI=uri, MGM_STUDIES_CHECKPOINTS=str(root / "checkpoints"))
    try:
        (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
        outcome = run_sweep(parse_study_spec(SPACE, source=root / "space.yaml"), storage=str(root / "ray"), verbose=0)
        assert outcome.statuses == {"finished": 9}
        assert main(["report", STUDY, "--out", str(root / "report")]) == 0
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(STUDY).experiment_id], "tags.`mgm.kind` = 'trial'")
    kl: dict[tuple[str, float], dict[int, float]] = {}
    for run in runs:
        arm = (run.data.params["train.optimizer.name"], float(run.data.params["train.optimizer.lr"]))
        kl.setdefault(arm, {})[int(run.data.params["train.seed"])] = run.data.metrics["kl/nfe-2"]
    return (root / "report" / "report.md").read_text(), kl


def _rows(text: str, caption: str) -> list[list[str]]:
    lines = text.splitlines()
    start = lines.index(f"*{caption}*")
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[start + 4 :] if line.startswith("|")][
        : len(ARMS)
    ]


def test_identical_arms_are_within_noise_and_the_untrained_arm_is_worse_by_the_hand_computed_margin(report):
    text, kl = report
    adam, adamw, slow = kl[("adam", 3e-3)], kl[("adamw", 3e-3)], kl[("adam", 1e-7)]
    assert adam == adamw  # the design: the same update, bit for bit
    rows = _rows(text, "train.optimizer vs kl/nfe-2 (finished trials; statistics as in the Summary)")
    # Two sections named alike (adam twice): the searcher labels them by position (option-0, -1, -2); the report
    # names each by the fields in which they differ.
    verdicts = {row[0]: row[2] for row in rows}
    assert list(verdicts) == ["adam lr=0.003", "adamw lr=0.003 weight_decay=0.0", "adam lr=1e-07"]
    verdicts = dict(zip(["option-0", "option-1", "option-2"], verdicts.values(), strict=True))
    assert verdicts["option-0"] == "best"  # tied with option-1: the first keeps it

    # The identical arm: difference 0 on every seed, p = 1 (adjusted), within noise.
    assert verdicts["option-1"] == "+0 [0, 0], p=1 (paired by seed, n=3): within noise"

    # The 1e-7 arm: paired differences over the three seeds, by hand.
    diffs = [slow[s] - adam[s] for s in (0, 1, 2)]
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    half = T_975_DF2 * sd / math.sqrt(3)
    p_raw = 2 * scipy_stats.t.sf(mean / (sd / math.sqrt(3)), 2)
    p_holm = min(1.0, 2 * p_raw)  # the smaller of two p-values, times 2 (the twin's is 1)
    assert p_holm < 0.05 and mean > 0
    assert (
        verdicts["option-2"]
        == f"{mean:+.3g} [{mean - half:.3g}, {mean + half:.3g}], p{p_text(p_holm)} (paired by seed, n=3): worse"
    )

    # Each value's own interval: mean ± t s / sqrt(3).
    values = list(slow.values())
    m, s = statistics.mean(values), statistics.stdev(values)
    assert rows[2][1].endswith(f"[{m - T_975_DF2 * s / math.sqrt(3):.3g}, {m + T_975_DF2 * s / math.sqrt(3):.3g}]")


def test_the_summary_says_the_winner_is_not_distinguishable_from_its_identical_runner_up(report):
    text, _ = report
    line = next(line for line in text.splitlines() if line.startswith("| kl/nfe-2 (optimised)"))
    assert "p=1 (paired by seed, n=3): within noise — the winner is not distinguishable" in line
    assert "Holm-adjusted" in text


def test_the_claims_section_reads_each_claim(report):
    text, _ = report
    claims = text.split("## Claims", 1)[1].split("\n## ", 1)[0]
    assert (
        "### lr 3e-3 beats lr 1e-7\n\nHOLDS: adam lr=0.003 did significantly better than each of adam lr=1e-07."
        in claims
    )
    assert (
        "### Adam beats AdamW without decay\n\nNOT SHOWN: against adamw lr=0.003 weight_decay=0.0 the difference is "
        "within noise." in claims
    )
    assert "### AdamW without decay is no worse than Adam\n\nHOLDS: no value did significantly better." in claims
