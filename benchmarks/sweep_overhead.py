"""What Ray Tune, Ray Train and the sweep's MLflow tracking add on top of training, in one run on this machine.

Four ways to train the same N short trials (checkerboard, MLP 64x2, `--steps` steps, an evaluation every
`--interval` steps), one after another:

1. bare: the Trainer in this process, nothing reported (the sum of the trials' training times);
2. tune-bare: a minimal Tune function trial running the same Trainer and calling `tune.report` once per evaluation
   (no MLflow, no checkpoints);
3. inline: `run_sweep` with the `inline` executor (reports with checkpoints and plots, MLflow child runs);
4. train: `run_sweep` with the `train` executor (a Ray Train `TorchTrainer` with one worker per trial).

Per trial it reports Tune's `time_total_s`; for `train`, a breakdown from timestamps taken in the trial and the worker
(controller + worker start until the worker function runs, imports and data, training, teardown); and the mean
seconds one report takes (`tune.report` / `ray.train.report`, checkpoint included) measured around each call.
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
from ray import tune

from mgm_studies.config import parse_run_config
from mgm_studies.studies.space import parse_study_spec
from mgm_studies.studies.sweep import ray_environment, run_sweep
from mgm_studies.training import ray_train
from mgm_studies.training.reporter import NullReporter
from mgm_studies.training.trainer import Trainer

# Shared by this process and Ray's workers (same machine): the instrumented functions write here.
TIMINGS = Path(os.environ.setdefault("MGM_SWEEP_OVERHEAD_TIMINGS", tempfile.mkdtemp(prefix="mgm-sweep-timings-")))


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
        Trainer(parse_run_config({**config, "train": {**config["train"], "seed": seed}}), reporter=NullReporter()).run()
        times.append(time.perf_counter() - start)
    return times


class _Reports(NullReporter):
    def report_evaluation(self, evaluation) -> None:
        tune.report({k: v for k, v in evaluation.metrics.items()})


def _tune_bare_trial(params: dict, config: dict) -> None:
    train = {**config["train"], "seed": params["seed"]}
    Trainer(parse_run_config({**config, "train": train}), reporter=_Reports()).run()


def tune_bare(config: dict, seeds: list[int], storage: Path) -> list[float]:
    trainable = tune.with_resources(tune.with_parameters(_tune_bare_trial, config=config), {"cpu": 1})
    tuner = tune.Tuner(
        trainable,
        param_space={"seed": tune.grid_search(seeds)},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(name="tune-bare", storage_path=str(storage), verbose=0),
    )
    return [r.metrics["time_total_s"] for r in tuner.fit()]


def _timed(send):
    """Wrap a trial's report function: append each call's duration (seconds) to a file per process."""
    path = TIMINGS / f"reports-{os.getpid()}.txt"

    def timed_send(result, folder):
        start = time.perf_counter()
        send(result, folder)
        with path.open("a") as f:
            f.write(f"{time.perf_counter() - start}\n")

    return timed_send


def _stamp(name: str) -> None:
    with (TIMINGS / "stamps.jsonl").open("a") as f:
        f.write(json.dumps({"name": name, "t": time.time(), "pid": os.getpid()}) + "\n")


def _instrument() -> None:
    """Ray's worker_process_setup_hook: timestamps and report timings around the sweep's own functions, in every
    Ray worker process (the functions are looked up by module attribute when called)."""
    _stamp("process_start")
    original_train, original_fit = ray_train.train_with_reporter, ray_train.run_torch_trainer

    def train_with_reporter(config, checkpoint_dir, send, **kwargs):
        _stamp("trainer_start")
        status = original_train(config, checkpoint_dir, _timed(send), **kwargs)
        _stamp("trainer_end")
        return status

    def run_torch_trainer(config, **kwargs):
        _stamp("fit_start")
        original_fit(config, **kwargs)
        _stamp("fit_end")

    ray_train.train_with_reporter = train_with_reporter
    ray_train.run_torch_trainer = run_torch_trainer


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


def _breakdown() -> dict[str, float]:
    """Median seconds of each phase of a `train` executor trial, from the stamps of its processes."""
    stamps = sorted(
        (json.loads(line) for line in (TIMINGS / "stamps.jsonl").read_text().splitlines()), key=lambda s: s["t"]
    )
    phases: dict[str, list[float]] = {
        "controller + worker start": [],
        "imports, process group, data, model": [],
        "training (reports included)": [],
        "teardown": [],
    }
    fit_starts = [s for s in stamps if s["name"] == "fit_start"]
    for fit_start in fit_starts:
        after = [s for s in stamps if s["t"] >= fit_start["t"]]
        trainer_start = next(s for s in after if s["name"] == "trainer_start")
        trainer_end = next(s for s in after if s["name"] == "trainer_end")
        fit_end = next(s for s in after if s["name"] == "fit_end")
        started = [s for s in after if s["name"] == "process_start" and s["t"] <= trainer_start["t"]]
        process_start = started[-1]["t"] if started else fit_start["t"]  # a worker process Ray had started before
        phases["controller + worker start"].append(process_start - fit_start["t"])
        phases["imports, process group, data, model"].append(trainer_start["t"] - process_start)
        phases["training (reports included)"].append(trainer_end["t"] - trainer_start["t"])
        phases["teardown"].append(fit_end["t"] - trainer_end["t"])
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
        runtime_env={"env_vars": environment, "worker_process_setup_hook": "sweep_overhead._instrument"},
    )
    try:
        tune_bare_times = tune_bare(config, seeds, work / "ray")
        inline_times, inline_wall = sweep(config, seeds, work / "ray", "inline")
        inline_reports = _report_seconds()
        train_times, train_wall = sweep(config, seeds, work / "ray", "train")
        train_reports = _report_seconds()
        breakdown = _breakdown()
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
        "inline_sweep_wall_seconds": inline_wall,
        "train_seconds": train_times,
        "train_sweep_wall_seconds": train_wall,
        "inline_vs_tune_bare": median(inline_times) / median(tune_bare_times),
        "train_orchestration_seconds": median(train_times) - median(bare_times),
        "inline_report_seconds": median(inline_reports) if inline_reports else None,
        "train_report_seconds": median(train_reports) if train_reports else None,
        "train_breakdown_seconds": breakdown,
    }
    print(f"{args.trials} trials x {args.steps} steps, an evaluation (and report) every {args.interval} steps")
    print(f"{'per trial (median)':<34} {'seconds':>8}")
    for name, values in (
        ("bare Trainer", bare_times),
        ("bare Tune function trial", tune_bare_times),
        ("inline executor trial", inline_times),
        ("train executor trial", train_times),
    ):
        print(f"{name:<34} {median(values):>8.2f}")
    print(f"inline / bare Tune trial: {results['inline_vs_tune_bare']:.2f} (target <= 1.2)")
    print(f"train orchestration: {results['train_orchestration_seconds']:.1f} s per trial (target <= 10 s)")
    for name, value in (("inline", results["inline_report_seconds"]), ("train", results["train_report_seconds"])):
        if value is not None:
            print(f"one {name} report (checkpoint included): {1000 * value:.0f} ms (target <= 50 ms for train)")
    for phase, seconds in breakdown.items():
        print(f"  train breakdown: {phase:<26} {seconds:6.2f} s")
    print(
        f"sweep wall: inline {inline_wall:.1f} s, train {train_wall:.1f} s; sum of bare trials {sum(bare_times):.1f} s"
    )
    write_results(args.out, results)


if __name__ == "__main__":
    main()
