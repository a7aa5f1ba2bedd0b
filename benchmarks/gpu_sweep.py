"""Sweeps of many small trials (issue 15, part 4): what `mgm-studies sweep` adds to a bare Ray Tune + Optuna loop
(`--mode cpu`), and trials per GPU-hour when small trials are packed on one GPU (`--mode gpu`).

`--mode cpu` (any machine): the same Optuna study (TPE, seed 0; 2-D: `train.optimizer.lr` x `interpolant.schedule`)
of `--trials` trials of `--steps` steps each (checkerboard, MLP 64x2, batch 128, an evaluation every `--interval`
steps), `--max-concurrent` at a time, one CPU each, run twice on one local Ray (started once, so neither pays for it):

1. bare: a Tune function trial that runs the same Trainer on the same config and calls `tune.report` with the
   metrics at each evaluation; `OptunaSearch` over the same distributions; Tune's JSON and CSV result files; no
   MLflow, no checkpoints;
2. sweep: `run_sweep` (the library function behind `mgm-studies sweep`) of the same study, `inline` executor: a
   report with a checkpoint at each evaluation, per-step scalars and samples, the MLflow parent and child runs.

It prints both wall times and their ratio (issue 15 measured 170.7 s against 121.0 s, 1.37x; target <= 1.1x), the
storage a trial leaves (bytes under the Tune storage folder, and MLflow artifacts, per trial), and where the extra
time goes: per trial, the trial function's wall time in its own process (start to return) and the Trainer's share of
it (reports included), the time one `tune.report` takes with and without a checkpoint, the slot time spent outside
trial functions (actor process start, scheduling), the driver's CPU time, the machine's CPU time, Tune's
experiment-state snapshots (count and seconds, on the driver) and the time the sweep's MLflow callback spends. The
timestamps in Ray's worker processes come from `_sweep_probe.py` (standard library only).

`--mode gpu` (needs CUDA; exit 2 without): a shipped 2-D study (`--space`, default `search_spaces/si_schedules.yaml`:
schedule x gamma, 18 trials of an MLP 256x4) through the CLI, `mgm-studies sweep SPACE --gpus-per-trial 1/K
--max-concurrent K` for K = 1, 2, 4, 8 trials per GPU on one GPU (CUDA_VISIBLE_DEVICES is set to the first one unless
already set), each in a fresh folder and MLflow store. It prints trials per GPU-hour (finished trials / wall hours,
Ray's start included) and the GPU utilisation sampled every second during each sweep (`nvidia-smi`, else pynvml).
`--set KEY=VALUE` is passed to every sweep (e.g. a fast path's switch, to compare with and without it).

    .venv/bin/python benchmarks/gpu_sweep.py --mode cpu [--trials 60] [--steps 60] [--interval 20]
    .venv/bin/python benchmarks/gpu_sweep.py --mode gpu [--space search_spaces/si_schedules.yaml] [--steps 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _results import write_results

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent


# ---------------------------------------------------------------------- measuring
def _machine_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat; None elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


class _Timers:
    """Seconds and calls of functions on this driver, wrapped in place (`wrap`) for one run, then put back."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[tuple[type, str, object]] = []
        self._lock = threading.Lock()

    def wrap(self, cls: type, name: str, label: str) -> None:
        original = getattr(cls, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
                    self.calls[label] = self.calls.get(label, 0) + 1

        setattr(cls, name, timed)
        self._undo.append((cls, name, original))

    def restore(self) -> None:
        for cls, name, original in reversed(self._undo):
            setattr(cls, name, original)
        self._undo.clear()


def _driver_timers(sweep: bool) -> _Timers:
    """`Tuner.fit` (the rest of a run's wall time is what it does before and after), Tune's experiment-state
    snapshots (`TuneController.save_to_dir`, called by `checkpoint()` when its period has passed or a snapshot is
    forced) and, for the sweep, the MLflow callback: its hooks on Tune's loop and the work of its writer thread."""
    from ray import tune
    from ray.tune.execution.tune_controller import TuneController

    timers = _Timers()
    timers.wrap(tune.Tuner, "fit", "Tuner.fit")
    timers.wrap(TuneController, "save_to_dir", "experiment-state snapshot")
    if sweep:
        from mgm_studies.studies.mlflow_sweep import MlflowSweepCallback

        for name in ("on_trial_start", "on_trial_result", "on_checkpoint", "on_trial_complete"):
            timers.wrap(MlflowSweepCallback, name, f"mlflow callback {name} (Tune's loop)")
        for name in ("_create", "_log_result", "_log_staged", "_finish"):
            if hasattr(MlflowSweepCallback, name):
                timers.wrap(MlflowSweepCallback, name, f"mlflow writer {name.lstrip('_')} (its thread)")
    return timers


# ---------------------------------------------------------------------- --mode cpu
def study_dict(trials: int, steps: int, interval: int, concurrent: int) -> dict:
    return {
        "name": "gpu_sweep_cpu",
        "base": {
            "data": {"name": "checkerboard"},
            "model": {"hidden": 64, "depth": 2, "embedding_dim": 16},
            "train": {"steps": steps, "batch_size": 128, "checkpoint_interval": interval, "ema_decays": [0.99]},
            "eval": {"metrics": ["kl"], "steps": [1], "num_samples": 2000, "interval": interval},
            "resources": {"executor": "inline", "cpus_per_worker": 1},
        },
        "metric": "kl/nfe-1",
        "mode": "min",
        "search": {"algorithm": "optuna", "num_samples": trials, "max_concurrent": concurrent, "seed": 0},
        "space": {
            "train.optimizer.lr": {"loguniform": [1.0e-4, 1.0e-2]},
            "interpolant.schedule": {"choice": ["linear", "trig"]},
        },
        "seeds": [0],
    }


def _bare_trial(params: dict, study) -> None:
    """The bare loop's Tune function trial: the Trainer on the trial's config, `tune.report` at each evaluation."""
    from _sweep_probe import stamp, timings
    from ray import tune

    from mgm_studies.runs import trainer_for
    from mgm_studies.training.reporter import NullReporter

    stamp("trial_start")
    seconds = []

    class Reports(NullReporter):
        def report_evaluation(self, evaluation) -> None:
            start = time.perf_counter()
            tune.report(dict(evaluation.metrics))
            seconds.append(time.perf_counter() - start)

    config = study.trial_config({key: params[key] for key in study.space}, study.seeds[0])
    stamp("trainer_start")
    trainer_for(config, reporter=Reports()).run()
    stamp("trainer_end")
    with (timings() / f"reports-{os.getpid()}.txt").open("a") as f:
        f.writelines(f"{s}\n" for s in seconds)
    stamp("trial_end")


def run_bare(study, storage: Path, concurrent: int) -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(
        space={
            "train.optimizer.lr": FloatDistribution(1.0e-4, 1.0e-2, log=True),
            "interpolant.schedule": CategoricalDistribution(["linear", "trig"]),
        },
        metric=study.metric[0],
        mode=study.mode[0],
        sampler=optuna.samplers.TPESampler(seed=study.search.seed),
    )
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_bare_trial, study=study), {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=study.search.num_samples, max_concurrent_trials=concurrent
        ),
        run_config=tune.RunConfig(
            name="bare", storage_path=str(storage), callbacks=[JsonLoggerCallback(), CSVLoggerCallback()], verbose=0
        ),
    )
    tuner.fit()


def _take(timings: Path) -> tuple[list[dict], list[float]]:
    """The probe's stamps (time order) and report durations written since the last call; the files are emptied."""
    import json

    stamps_file = timings / "stamps.jsonl"
    stamps = []
    if stamps_file.is_file():
        stamps = sorted((json.loads(line) for line in stamps_file.read_text().splitlines()), key=lambda s: s["t"])
        stamps_file.unlink()
    reports = []
    for path in timings.glob("reports-*.txt"):
        reports += [float(x) for x in path.read_text().split()]
        path.unlink()
    return stamps, reports


def _spans(stamps: list[dict], start: str, end: str) -> list[float]:
    """Seconds from each `start` stamp to the next `end` stamp of the same process."""
    opened, spans = {}, []
    for s in stamps:
        if s["name"] == start:
            opened[s["pid"]] = s["t"]
        elif s["name"] == end and s["pid"] in opened:
            spans.append(s["t"] - opened.pop(s["pid"]))
    return spans


def _measure(name: str, run, *, sweep: bool, storage: Path, timings: Path, concurrent: int) -> dict:
    timers = _driver_timers(sweep)
    cpu0, machine0, start = time.process_time(), _machine_cpu_seconds(), time.perf_counter()
    try:
        run()
    finally:
        timers.restore()
    wall = time.perf_counter() - start
    driver_cpu, machine1 = time.process_time() - cpu0, _machine_cpu_seconds()
    stamps, reports = _take(timings)
    trial_walls = _spans(stamps, "trial_start", "trial_end")
    trainer_walls = _spans(stamps, "trainer_start", "trainer_end")
    experiment = next(p for p in storage.iterdir() if p.is_dir())
    trials = max(len(trial_walls), 1)
    results = [len(p.read_text().splitlines()) for p in experiment.glob("*/result.json")]
    median = statistics.median
    return {
        "name": name,
        "wall_seconds": wall,
        "trials": len(trial_walls),
        "trial_function_seconds": median(trial_walls) if trial_walls else None,
        "trainer_seconds": median(trainer_walls) if trainer_walls else None,
        "report_seconds": median(reports) if reports else None,
        "reports_per_trial": len(reports) / trials,
        "results_per_trial": median(results) if results else None,
        "outside_trial_functions_seconds_per_trial": (concurrent * wall - sum(trial_walls)) / trials,
        "processes_started_per_trial": sum(s["name"] == "process_start" for s in stamps) / trials,
        "driver_cpu_seconds_per_trial": driver_cpu / trials,
        "machine_cpu_seconds_per_trial": None if machine0 is None else (machine1 - machine0) / trials,
        "outside_tuner_fit_seconds": wall - timers.seconds.get("Tuner.fit", wall),
        "driver_seconds": timers.seconds,
        "driver_calls": timers.calls,
        "tune_checkpoints_left_per_trial": len(list(experiment.glob("*/checkpoint_*"))) / trials,
        "tune_storage_bytes_per_trial": _folder_bytes(experiment) / trials,
    }


def cpu_mode(args: argparse.Namespace) -> None:
    import ray

    from mgm_studies.studies.ray_start import ray_environment
    from mgm_studies.studies.space import parse_study_spec
    from mgm_studies.studies.sweep import run_sweep

    work = Path(tempfile.mkdtemp(prefix="mgm-gpu-sweep-cpu-"))
    timings = work / "timings"
    timings.mkdir()
    os.environ["MGM_SWEEP_OVERHEAD_TIMINGS"] = str(timings)  # the probe's folder (`_sweep_probe.py`)
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"  # artifacts go to work/mlartifacts
    study = parse_study_spec(study_dict(args.trials, args.steps, args.interval, args.max_concurrent))

    environment = {k: v for k, v in ray_environment("").items() if k != "MLFLOW_TRACKING_URI"}
    environment["MGM_SWEEP_OVERHEAD_TIMINGS"] = str(timings)
    environment["PYTHONPATH"] = os.pathsep.join([str(BENCHMARKS), os.environ.get("PYTHONPATH", "")])
    os.environ.update(environment)
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # both runs get Tune's JSON and CSV loggers, given
    ray_start = time.perf_counter()
    ray.init(
        num_cpus=args.max_concurrent,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": environment, "worker_process_setup_hook": "_sweep_probe.install"},
    )
    ray_start = time.perf_counter() - ray_start
    options = {"timings": timings, "concurrent": args.max_concurrent}
    try:
        _take(timings)  # the idle workers Ray started
        bare = _measure(
            "bare Tune + Optuna",
            lambda: run_bare(study, work / "bare", args.max_concurrent),
            sweep=False,
            storage=work / "bare",
            **options,
        )
        sweep = _measure(
            "mgm-studies sweep",
            lambda: run_sweep(study, storage=str(work / "sweep"), verbose=0),
            sweep=True,
            storage=work / "sweep",
            **options,
        )
    finally:
        ray.shutdown()
    sweep["mlflow_artifact_bytes_per_trial"] = _folder_bytes(work / "mlartifacts") / max(sweep["trials"], 1)
    sweep["mlflow_db_bytes_per_trial"] = (work / "mlflow.db").stat().st_size / max(sweep["trials"], 1)
    results = {
        "trials": args.trials,
        "steps": args.steps,
        "interval": args.interval,
        "max_concurrent": args.max_concurrent,
        "cpus": os.cpu_count(),
        "ray_init_seconds": ray_start,
        "bare": bare,
        "sweep": sweep,
        "ratio": sweep["wall_seconds"] / bare["wall_seconds"],
    }
    _print_cpu(results)
    write_results(args.out, results)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def _print_cpu(results: dict) -> None:
    bare, sweep = results["bare"], results["sweep"]
    print(
        f"{results['trials']} Optuna trials x {results['steps']} steps (a report every {results['interval']}), "
        f"{results['max_concurrent']} at a time, {results['cpus']} CPUs; "
        f"Ray started once ({results['ray_init_seconds']:.1f} s)"
    )
    print(f"wall: bare {bare['wall_seconds']:.1f} s, mgm-studies sweep {sweep['wall_seconds']:.1f} s")
    print(f"ratio: {results['ratio']:.2f}x (issue 15: 170.7 / 121.0 = 1.37x; target <= 1.1x)")
    rows = [
        ("trials run", "trials", "{:.0f}"),
        ("s outside Tuner.fit (set-up, summary)", "outside_tuner_fit_seconds", "{:.1f}"),
        ("trial function, median s", "trial_function_seconds", "{:.2f}"),
        ("  of which the Trainer (reports incl.), s", "trainer_seconds", "{:.2f}"),
        ("one tune.report, median ms", "report_seconds", "{:.1f}", 1000),
        ("reports per trial", "reports_per_trial", "{:.1f}"),
        ("slot s outside trial functions / trial", "outside_trial_functions_seconds_per_trial", "{:.2f}"),
        ("Ray processes started per trial", "processes_started_per_trial", "{:.2f}"),
        ("driver CPU s per trial", "driver_cpu_seconds_per_trial", "{:.2f}"),
        ("machine CPU s per trial", "machine_cpu_seconds_per_trial", "{:.2f}"),
        ("Tune checkpoints left per trial", "tune_checkpoints_left_per_trial", "{:.1f}"),
        ("Tune storage per trial, KB", "tune_storage_bytes_per_trial", "{:.0f}", 1 / 1000),
    ]
    print(f"  {'':<42} {'bare':>10} {'sweep':>10}")
    for label, key, form, *scale in rows:
        cells = []
        for run in (bare, sweep):
            value = run.get(key)
            cells.append("-" if value is None else form.format(value * (scale[0] if scale else 1)))
        print(f"  {label:<42} {cells[0]:>10} {cells[1]:>10}")
    print(f"  MLflow artifacts per trial: {sweep['mlflow_artifact_bytes_per_trial'] / 1000:.0f} KB (sweep)")
    for run in (bare, sweep):
        for label, seconds in run["driver_seconds"].items():
            calls = run["driver_calls"][label]
            print(f"  {run['name']}: driver, {label}: {calls} calls, {seconds:.2f} s")


# ---------------------------------------------------------------------- --mode gpu
class _UtilisationSampler(threading.Thread):
    """GPU utilisation (%) every `period` seconds, the mean over visible GPUs: nvidia-smi, else pynvml."""

    def __init__(self, ids: str, period: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.period, self.samples = period, []
        self._stop_event = threading.Event()
        self._read = self._reader(ids)

    def _reader(self, ids: str):
        """`ids`: the sweep's CUDA_VISIBLE_DEVICES (indices, or UUIDs that nvidia-smi also takes)."""
        if shutil.which("nvidia-smi"):
            command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", f"--id={ids}"]

            def read() -> float | None:
                out = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.split()
                values = [float(v) for v in out if v.replace(".", "", 1).isdigit()]
                return statistics.mean(values) if values else None

            return read
        try:
            import pynvml
        except ImportError:
            return None
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(int(i)) for i in ids.split(",") if i.strip().isdigit()]
        handles = handles or [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        return lambda: statistics.mean(pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles)

    def run(self) -> None:
        while self._read is not None and not self._stop_event.is_set():
            try:
                value = self._read()
            except (OSError, subprocess.SubprocessError):
                value = None
            if value is not None:
                self.samples.append(value)
            self._stop_event.wait(self.period)

    def stop(self) -> list[float]:
        self._stop_event.set()
        self.join(timeout=15)
        return self.samples


def gpu_mode(args: argparse.Namespace) -> None:
    import torch

    if not torch.cuda.is_available():
        print("gpu_sweep.py --mode gpu needs a CUDA device, and none is visible here", file=sys.stderr)
        sys.exit(2)
    space = Path(args.space).resolve()
    environment = dict(os.environ)
    environment.setdefault("CUDA_VISIBLE_DEVICES", "0")  # one GPU: the figures are per GPU
    cpus = os.cpu_count() or 1
    rows = []
    for per_gpu in args.per_gpu:
        work = Path(tempfile.mkdtemp(prefix=f"mgm-gpu-sweep-{per_gpu}-"))
        environment["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        command = [sys.executable, "-m", "mgm_studies", "sweep", str(space), "--quiet"]
        command += ["--storage", str(work / "ray_results"), "--max-concurrent", str(per_gpu)]
        command += ["--gpus-per-trial", f"{1 / per_gpu:g}", "--cpus-per-trial", f"{min(1.0, cpus / per_gpu):g}"]
        command += ["--set", f"train.steps={args.steps}"] if args.steps else []
        for override in args.set:
            command += ["--set", override]
        print("$", " ".join(command), flush=True)
        sampler = _UtilisationSampler(environment["CUDA_VISIBLE_DEVICES"])
        sampler.start()
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True)
        wall = time.perf_counter() - start
        utilisation = sampler.stop()
        finished = re.search(r"(\d+) finished", done.stdout)
        row = {
            "trials_per_gpu": per_gpu,
            "gpus_per_trial": 1 / per_gpu,
            "exit_code": done.returncode,
            "finished_trials": int(finished.group(1)) if finished else 0,
            "wall_seconds": wall,
            "gpu_utilisation_mean": statistics.mean(utilisation) if utilisation else None,
            "gpu_utilisation_median": statistics.median(utilisation) if utilisation else None,
            "utilisation_samples": len(utilisation),
        }
        row["trials_per_gpu_hour"] = row["finished_trials"] / (wall / 3600)
        rows.append(row)
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{space.name}, {args.steps or 'the space`s'} steps, {torch.cuda.get_device_name(0)}")
    print(f"  {'trials/GPU':>10} {'finished':>9} {'wall s':>8} {'trials/GPU-h':>13} {'util mean %':>12}")
    for row in rows:
        util = row["gpu_utilisation_mean"]
        print(
            f"  {row['trials_per_gpu']:>10} {row['finished_trials']:>9} {row['wall_seconds']:>8.1f} "
            f"{row['trials_per_gpu_hour']:>13.0f} {'-' if util is None else f'{util:.0f}':>12}"
        )
    write_results(
        args.out,
        {
            "space": str(space),
            "steps": args.steps,
            "set": args.set,
            "device": torch.cuda.get_device_name(0),
            "rows": rows,
        },
    )
    if any(row["exit_code"] != 0 for row in rows):
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["cpu", "gpu"], required=True)
    parser.add_argument("--trials", type=int, default=60, help="cpu: Optuna trials")
    parser.add_argument("--steps", type=int, help="training steps per trial (cpu: default 60; gpu: default 1000)")
    parser.add_argument("--interval", type=int, default=20, help="cpu: steps between evaluations (and reports)")
    parser.add_argument("--max-concurrent", type=int, default=2, help="cpu: trials at a time (and Ray's CPUs)")
    parser.add_argument("--space", default=str(REPO / "search_spaces" / "si_schedules.yaml"), help="gpu: the study")
    parser.add_argument("--per-gpu", type=int, nargs="+", default=[1, 2, 4, 8], help="gpu: trials per GPU to run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="gpu: passed to every sweep")
    parser.add_argument("--keep", action="store_true", help="keep the work folders (printed paths)")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/gpu_sweep_<mode>.json)")
    args = parser.parse_args()
    args.out = str(Path(args.out or REPO / "benchmarks" / "results" / f"gpu_sweep_{args.mode}.json").resolve())
    if args.mode == "cpu":
        args.steps = args.steps or 60
        cpu_mode(args)
    else:
        args.steps = args.steps or 1000
        gpu_mode(args)


if __name__ == "__main__":
    main()
