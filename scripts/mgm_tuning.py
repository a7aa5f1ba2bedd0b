"""The harness behind the README's MGM critic measurements (tuning on a pinwheel outside the five data sets).

    .venv/bin/python scripts/mgm_tuning.py LABEL [KEY=VALUE ...]

Trains one run in-process from the base of search_spaces/mgm_vs_si.yaml with MGM's recipe as the tuning began (warm-up
2000 of 4000, generator and critic at lr 1e-4, no Fourier features: the README's pinwheel figures are this base with
their overrides; the shipped recipe is `objective.critic_features=64 objective.critic_lr=1e-3`), applies `--set`-style
overrides, and prints one JSON line: kl/nfe-1 and kl/nfe-4 at the end, and at every evaluation (every 1000 steps;
`eval.interval=...`) kl/nfe-1 and, with `objective.collapse_check_steps=200`, the collapse detector's figures.
`data=pinwheel-file` uses the Parquet pinwheel the tuning ran on (5 arms, 20k points, written to pinwheel.parquet here
once). E.g.
`scripts/mgm_tuning.py rff data=pinwheel-file objective.critic_features=64`.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mgm_studies.config import parse_run_config
from mgm_studies.runs import trainer_for
from mgm_studies.training.reporter import RecordingReporter
from mgm_studies.yaml_input import apply_overrides

BASE = {
    "data": {"name": "checkerboard"},
    "model": {"name": "mlp", "hidden": 256, "depth": 4},
    "interpolant": {"schedule": "linear", "gamma": "none"},
    "objective": {
        "name": "mgm",
        "denoiser_steps": 2000,
        "critic_lr": 1e-4,
        "generator_lr": 1e-4,
        "collapse_check_steps": 0,
    },
    "train": {
        "steps": 4000,
        "batch_size": 512,
        "optimizer": {"name": "adam", "lr": 1e-3},
        "grad_clip": None,
        "ema_decays": [0.999],
        "checkpoint_interval": 10**6,
    },
    "eval": {"metrics": ["kl"], "steps": [1, 4], "num_samples": 20000, "interval": 1000},
}
PINWHEEL_FILE = Path("pinwheel.parquet")
# The collapse detector's figures, printed as curves when objective.collapse_check_steps > 0.
CHECKS = ("mgm/divergence_critic", "mgm/divergence_refit", "mgm/critic_r2")


def write_pinwheel(path: Path) -> None:
    """20k points of a 5-armed pinwheel (numpy seed 123): radius N(1, 0.3), tangential N(0, 0.05) x radius."""
    rng = np.random.default_rng(123)
    n, arms = 20000, 5
    r, tangential = rng.normal(1.0, 0.3, n), rng.normal(0, 0.05, n)
    angle = 2 * np.pi * rng.integers(0, arms, n) / arms + 0.25 * np.exp(r)
    x = r * np.cos(angle) - tangential * np.sin(angle) * r
    y = r * np.sin(angle) + tangential * np.cos(angle) * r
    pq.write_table(pa.table({"x": (2 * x).astype("float32"), "y": (2 * y).astype("float32")}), path)


def main() -> None:
    torch.set_num_threads(1)  # two runs at a time on a 2-core machine
    label, overrides = sys.argv[1], sys.argv[2:]
    if "data=pinwheel-file" in overrides:
        if not PINWHEEL_FILE.exists():
            write_pinwheel(PINWHEEL_FILE)
        file = f"data={{name: file, path: {PINWHEEL_FILE}}}"
        overrides = [file if o == "data=pinwheel-file" else o for o in overrides]
    config = parse_run_config(apply_overrides(copy.deepcopy(BASE), overrides))
    reporter, started = RecordingReporter(), time.time()
    result = trainer_for(config, reporter=reporter).run()
    curves = {
        f"{name} curve": [round(e.metrics[name], 4) if name in e.metrics else None for e in reporter.evaluations]
        for name in ("kl/nfe-1", *CHECKS)
    }
    curves = {name: curve for name, curve in curves.items() if any(value is not None for value in curve)}
    row = {"label": label, "overrides": overrides, "status": result.status, "seconds": round(time.time() - started, 1)}
    print(json.dumps({**row, **{k: result.metrics.get(k) for k in ("kl/nfe-1", "kl/nfe-4")}, **curves}))


if __name__ == "__main__":
    main()
