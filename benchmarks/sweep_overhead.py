"""What Ray Tune, Ray Train and the sweep's MLflow tracking add on top of training, in one run on this machine.

Four ways to train the same N short trials (checkerboard, MLP 64x2, `--steps` steps, an evaluation every
`--interval` steps), one after another:

1. bare: the Trainer in this process, nothing reported (the sum of the trials' training times);
2. tune-bare: a minimal Tune function trial running the same Trainer and calling `tune.report` once per evaluation
   (no MLflow, no checkpoints);
3. inline: `run_sweep` with the `inline` executor (reports with checkpoints and samples, MLflow child runs; the
   sample plots are drawn by the driver's MLflow callback);
4. train: `run_sweep` with the `train` executor (a Ray Train `TorchTrainer` with one worker per trial).

Per trial it reports the wall time of the trial function, from its start to its return in its own process (Tune's
`time_total_s` is shown too, but it stops at the last report: for `train` it misses the Train run's teardown); for
`train`, a breakdown from timestamps taken in the trial and the worker (fit() until the worker function runs, the
config and model, training, teardown); and the median seconds one report takes (`tune.report` / `ray.train.report`,
checkpoint included) measured around each call. The timestamps come from a probe Ray runs in every worker process
(`_sweep_probe.py`, standard library only: a heavier probe would itself load the 2 cores).
Targets (issue 4): inline within 1.2x of tune-bare; train <= 10 s orchestration per trial and <= 50 ms per report.

    .venv/bin/python benchmarks/sweep_overhead.py [--trials 3] [--steps 600] [--interval 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray
from _results import write_results
from _sweep_probe import stamp, timings
from ray import tune

from mgm_studies.config import parse_run_config
from mgm_studies.runs import trainer_for
from mgm_studies.studies.ray_start import ray_environment
from mgm_studies.studies.space import parse_study_spec
from mgm_studies.studies.sweep import run_sweep
from mgm_studies.training.reporter import NullReporter

# Shared by this process and Ray's workers (same machine): the probe (`_sweep_probe.py`) writes here.
os.environ.setdefault("MGM_SWEEP_OVERHEAD_TIMINGS", tempfile.mkdtemp(prefix="mgm-sweep-timings-"))
TIMINGS = timings()


def base_config(steps: int, interval: int) -> dict:
    return {
        "data": {"name": "checkerboard"},
        "model": {"hidden": 64, "depth": 2, "embedding_dim": 16},
        "train": {"steps": steps, "batch_size": 128, "checkpoint_interval": interval, "ema_decays": [0.99]},
        "eval": {"metrics": ["kl"], "steps": [1, 4], "num_samples": 2000, "interval": interval},
    }


def bare(config: dict, seeds: list[int]) -> list[float]:
    times = []
    for seed in seeds:
        start = time.perf_counter()
        trainer_for(
            parse_run_config({**config, "train": {**config["train"], "seed": seed}}), reporter=NullReporter()
        ).run()
        times.append(time.perf_counter() - start)
    return times


class _Reports(NullReporter):
    def report_evaluation(self, evaluation) -> None:
        tune.report({k: v for k, v in evaluation.metrics.items()})


def _tune_bare_trial(params: dict, config: dict) -> None:
    stamp("trial_start")
    train = {**config["train"], "seed": params["seed"]}
    trainer_for(parse_run_config({**config, "train": train}), reporter=_Reports()).run()
    stamp("trial_end")


def tune_bare(config: dict, seeds: list[int], storage: Path) -> list[float]:
    trainable = tune.with_resources(tune.with_parameters(_tune_bare_trial, config=config), {"cpu": 1})
    tuner = tune.Tuner(
        trainable,
        param_space={"seed": tune.grid_search(seeds)},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(name="tune-bare", storage_path=str(storage), verbose=0),
    )
    return [r.metrics["time_total_s"] for r in tuner.fit()]


def sweep(config: dict, seeds: list[int], storage: Path, executor: str) -> tuple[list[float], float]:
    spec = parse_study_spec(
        {
            "name": f"overhead_{executor}",
            "base": {**config, "resources": {"executor": executor, "cpus_per_worker": 1}},
            "metric": "kl/nfe-1",
            "search": {"algorithm": "grid", "max_concurrent": 1},
            "space": {"interpolant.schedule": {"grid": ["linear"]}},
            "seeds": seeds,
        }
    )
    start = time.perf_counter()
    run_sweep(spec, storage=str(storage), verbose=0)
    wall = time.perf_counter() - start
    experiment = storage / next(p.name for p in storage.iterdir() if p.name.startswith(f"overhead_{executor}"))
    totals = []
    for result_file in sorted(experiment.glob("*/result.json")):
        lines = result_file.read_text().strip().splitlines()
        totals.append(json.loads(lines[-1])["time_total_s"])
    return totals, wall


def _take_stamps() -> list[dict]:
    """The stamps written since the last call (`_sweep_probe.py`), in time order; the file is emptied."""
    path = TIMINGS / "stamps.jsonl"
    if not path.is_file():
        return []
    stamps = sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda s: s["t"])
    path.unlink()
    return stamps


def _trial_walls(stamps: list[dict]) -> list[float]:
    """Seconds from each trial function's start to its return, in its own process."""
    starts, walls = {}, []
    for s in stamps:
        if s["name"] == "trial_start":
            starts[s["pid"]] = s["t"]
        elif s["name"] == "trial_end" and s["pid"] in starts:
            walls.append(s["t"] - starts.pop(s["pid"]))
    return walls


def _breakdown(stamps: list[dict]) -> dict[str, float]:
    """Median seconds of each phase of a `train` executor trial, from the probe's stamps (`_sweep_probe.py`)."""
    phases: dict[str, list[float]] = {
        "fit() until the worker function runs": [],
        "  of which the worker process start + imports": [],
        "config, data, model": [],
        "training (reports included)": [],
        "teardown (until fit() returns)": [],
        "processes Ray started during fit()": [],
    }
    for fit_start in (s for s in stamps if s["name"] == "fit_start"):
        after = [s for s in stamps if s["t"] >= fit_start["t"]]
        worker_fn = next(s for s in after if s["name"] == "worker_fn")
        trainer_start = next(s for s in after if s["name"] == "trainer_start" and s["pid"] == worker_fn["pid"])
        trainer_end = next(s for s in after if s["name"] == "trainer_end" and s["pid"] == worker_fn["pid"])
        fit_end = next(s for s in after if s["name"] == "fit_end")
        # The worker's process: started during this fit, or an idle one Ray had started before it.
        process_start = max(
            [s["t"] for s in stamps if s["name"] == "process_start" and s["pid"] == worker_fn["pid"]] or [0.0]
        )
        started = [s for s in after if s["name"] == "process_start" and s["t"] <= fit_end["t"]]
        phases["fit() until the worker function runs"].append(worker_fn["t"] - fit_start["t"])
        phases["  of which the worker process start + imports"].append(
            worker_fn["t"] - max(process_start, fit_start["t"])
        )
        phases["config, data, model"].append(trainer_start["t"] - worker_fn["t"])
        phases["training (reports included)"].append(trainer_end["t"] - trainer_start["t"])
        phases["teardown (until fit() returns)"].append(fit_end["t"] - trainer_end["t"])
        phases["processes Ray started during fit()"].append(float(len(started)))
    return {k: statistics.median(v) for k, v in phases.items() if v}


def _report_seconds() -> list[float]:
    values = []
    for path in TIMINGS.glob("reports-*.txt"):
        values += [float(x) for x in path.read_text().split()]
        path.unlink()
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--interval", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/results/sweep_overhead.json")
    args = parser.parse_args()
    seeds = list(range(args.trials))
    config = base_config(args.steps, args.interval)
    work = Path(tempfile.mkdtemp(prefix="mgm-sweep-bench-"))
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"

    bare_times = bare(config, seeds)
    environment = {k: v for k, v in ray_environment("").items() if k != "MLFLOW_TRACKING_URI"}
    environment["MGM_SWEEP_OVERHEAD_TIMINGS"] = str(TIMINGS)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
    )
    os.environ.update(environment)
    ray.init(
        num_cpus=2,
        include_dashboard=True,
        log_to_driver=False,
        runtime_env={"env_vars": environment, "worker_process_setup_hook": "_sweep_probe.install"},
    )
    try:
        _take_stamps()  # the idle workers Ray started
        tune_bare_totals = tune_bare(config, seeds, work / "ray")
        tune_bare_times = _trial_walls(_take_stamps())
        inline_totals, inline_wall = sweep(config, seeds, work / "ray", "inline")
        inline_times, inline_reports = _trial_walls(_take_stamps()), _report_seconds()
        train_totals, train_wall = sweep(config, seeds, work / "ray", "train")
        train_stamps = _take_stamps()
        train_times, train_reports, breakdown = _trial_walls(train_stamps), _report_seconds(), _breakdown(train_stamps)
    finally:
        ray.shutdown()

    evaluations = args.steps // args.interval
    median = statistics.median
    results = {
        "trials": args.trials,
        "steps": args.steps,
        "evaluations_per_trial": evaluations,
        "bare_seconds": bare_times,
        "tune_bare_seconds": tune_bare_times,
        "inline_seconds": inline_times,
        "train_seconds": train_times,
        "tune_time_total_s": {"tune_bare": tune_bare_totals, "inline": inline_totals, "train": train_totals},
        "inline_sweep_wall_seconds": inline_wall,
        "train_sweep_wall_seconds": train_wall,
        "inline_vs_tune_bare": median(inline_times) / median(tune_bare_times),
        "train_orchestration_seconds": median(train_times) - median(bare_times),
        "inline_report_seconds": median(inline_reports) if inline_reports else None,
        "train_report_seconds": median(train_reports) if train_reports else None,
        "train_breakdown_seconds": breakdown,
    }
    print(f"{args.trials} trials x {args.steps} steps, an evaluation (and report) every {args.interval} steps")
    print("per trial, median seconds: the trial function's wall time (Tune's time_total_s in brackets)")
    for name, values, totals in (
        ("bare Trainer", bare_times, None),
        ("bare Tune function trial", tune_bare_times, tune_bare_totals),
        ("inline executor trial", inline_times, inline_totals),
        ("train executor trial", train_times, train_totals),
    ):
        shown = f" ({median(totals):.2f})" if totals else ""
        print(f"  {name:<32} {median(values):>8.2f}{shown}")
    print(f"inline / bare Tune trial: {results['inline_vs_tune_bare']:.2f} (target <= 1.2)")
    print(f"train orchestration: {results['train_orchestration_seconds']:.1f} s per trial (target <= 10 s)")
    for name, value in (("inline", results["inline_report_seconds"]), ("train", results["train_report_seconds"])):
        if value is not None:
            print(f"one {name} report (checkpoint included): {1000 * value:.0f} ms (target <= 50 ms for train)")
    for phase, seconds in breakdown.items():
        print(f"  train breakdown: {phase:<46} {seconds:6.2f}")
    print(
        f"sweep wall: inline {inline_wall:.1f} s, train {train_wall:.1f} s; sum of bare trials {sum(bare_times):.1f} s"
    )
    write_results(args.out, results)


if __name__ == "__main__":
    main()
