"""Images per second of training with the shared Trainer on the U-Net, for `si`, `itvm` and `mgm`, in one process.

Each objective trains scikit-learn digits (8x8, or 16x16 with `--size 16`) through `Trainer.run()`, the real loop,
with a reporter that stamps the time at which every step's scalars are reported. The Trainer reports (one host copy
of the step losses, a device sync) every `log_interval` steps; the log interval is set so that the end of the
warm-up and the last step fall on reports, and ms/step = (stamp after the last step - stamp after the warm-up) /
timed steps. The build, the warm-up and the final evaluation are outside the timed window.

A step is the Trainer's step: one optimiser step per phase of the objective, each on a fresh batch (`mgm`: critic and
generator, so two batches). images/s counts the data images a step draws, batch x phases; `train.images` counts one
batch per step. `itvm` distils an `si` teacher of the same U-Net (trained 1 step: its cost, not its quality, counts).
On a shared CPU, compare with `--threads 1`: torch's default of one thread per core can be many times slower when
another process holds a core (its threads wait for each other at every operation).

    .venv/bin/python benchmarks/image_throughput.py [--size 16] [--batch 128] [--steps 30] [--warmup 5]
        [--channels 32] [--channel-mult 1,2] [--threads N] [--objectives si,itvm,mgm]
        [--device cuda] [--precision bfloat16 | --compare-precision] [--compare-compile] [--channels-last]

`--compare-compile` runs every objective eager and with `train.compile` (torch.compile of the trained network) and
prints the speed-up; the compiled runs are warmed up for `--compile-warmup` steps (the first steps compile), and the
compilation time (the warm-up's wall time minus eager warm-up) is printed too.
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from _results import write_results

from mgm_studies.config import RunConfig, parse_run_config
from mgm_studies.exported import save_exported
from mgm_studies.runs import trainer_for
from mgm_studies.training.reporter import NullReporter


class StepClock(NullReporter):
    """Time (perf_counter seconds) at which each step's scalars were reported, after a device sync on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.stamps: dict[int, float] = {}

    def report_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.stamps[step] = time.perf_counter()


def make_config(
    args: argparse.Namespace, objective: dict, precision: str, warmup: int, compiled: bool = False
) -> RunConfig:
    steps = warmup + args.steps
    return parse_run_config(
        {
            "data": {"name": "digits", "size": args.size},
            "model": {"name": "unet", "channels": args.channels, "channel_mult": args.channel_mult},
            "objective": objective,
            "train": {
                "steps": steps,
                "batch_size": args.batch,
                "precision": precision,
                "compile": compiled,
                "channels_last": args.channels_last,
                # Reports fall on the end of the warm-up and on the last step (see the module docstring).
                "log_interval": math.gcd(warmup, args.steps),
                "checkpoint_interval": 10 * steps,
            },
            # Only at the end, outside the timed window, and small.
            "eval": {"metrics": ["sw2"], "steps": [1], "num_samples": 16, "interval": 0},
        }
    )


def export_teacher(args: argparse.Namespace, path: Path) -> Path:
    """An `si` teacher of the same U-Net, trained 1 step on the CPU and exported."""
    trainer = trainer_for(make_config(args, {"name": "si"}, "float32", warmup=1))
    trainer.train_step()
    return save_exported(trainer.export(), path)


def measure(config: RunConfig, warmup: int, device: str) -> dict[str, Any]:
    """Train `config` (warm-up + timed steps) and time the steps after the warm-up."""
    clock = StepClock(torch.device(device))
    trainer = trainer_for(config, reporter=clock, device=device)
    phases = len(trainer.objective.phases(warmup))
    started = time.perf_counter()
    trainer.run()
    ends = sorted(s for s in clock.stamps if s >= warmup and s % config.train.log_interval == 0)
    seconds = (clock.stamps[ends[-1]] - clock.stamps[ends[0]]) / (ends[-1] - ends[0])
    windows = [(clock.stamps[b] - clock.stamps[a]) / (b - a) for a, b in itertools.pairwise(ends)]
    return {
        "phases_per_step": phases,
        "ms_per_step": 1000 * seconds,
        "images_per_s": config.train.batch_size * phases / seconds,
        "window_ms_per_step": [1000 * w for w in windows],
        "warmup_s": clock.stamps[warmup] - started,
    }


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU"


def print_table(title: str, rows: dict[str, dict[str, Any]]) -> None:
    base = rows["si"]["ms_per_step"] if "si" in rows else None
    print(f"\n{title}")
    print(f"{'objective':<10} {'phases':>6} {'ms/step':>9} {'images/s':>9} {'ms/step x si':>13} {'window ms/step':>17}")
    for name, row in rows.items():
        ratio = f"{row['ms_per_step'] / base:.2f}" if base else "-"
        windows = row["window_ms_per_step"]
        spread = f"{min(windows):.1f}-{max(windows):.1f}"
        print(
            f"{name:<10} {row['phases_per_step']:>6} {row['ms_per_step']:>9.1f} {row['images_per_s']:>9.0f} "
            f"{ratio:>13} {spread:>17}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--compare-precision", action="store_true", help="CUDA: float32 and bfloat16, and the speed-up")
    parser.add_argument("--size", type=int, choices=[8, 16], default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--channel-mult", type=lambda s: [int(m) for m in s.split(",")], default=[1, 2])
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; default: torch's")
    parser.add_argument("--objectives", type=lambda s: s.split(","), default=["si", "itvm", "mgm"])
    parser.add_argument("--compare-compile", action="store_true", help="eager and train.compile, and the speed-up")
    parser.add_argument("--compile-warmup", type=int, default=10, help="untimed steps first for compiled runs")
    parser.add_argument("--channels-last", action="store_true", help="train.channels_last for every run")
    parser.add_argument("--out", default="benchmarks/results/image_throughput.json")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be >= 1")
    if args.compare_precision and args.device != "cuda":
        parser.error("--compare-precision needs --device cuda")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    precisions = ["float32", "bfloat16"] if args.compare_precision else [args.precision]
    setup = {
        "data": f"digits {args.size}x{args.size}",
        "model": f"unet channels {args.channels} channel_mult {args.channel_mult}",
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "log_interval": math.gcd(args.warmup, args.steps),
        "channels_last": args.channels_last,
    }
    print(f"torch {torch.__version__}, {device_name(args.device)} ({torch.get_num_threads()} CPU threads)")
    print(", ".join(f"{k} {v}" for k, v in setup.items()))
    print("step = one optimiser step per phase, each on a fresh batch; images/s = batch x phases / (s/step)")
    results: dict[str, Any] = {
        "torch": torch.__version__,
        "device": device_name(args.device),
        "threads": torch.get_num_threads(),
        **setup,
        "images_per_step": "batch_size x phases (data images drawn per Trainer step)",
        "precisions": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        teacher = str(export_teacher(args, Path(tmp) / "teacher.pt")) if "itvm" in args.objectives else None
        modes = [False, True] if args.compare_compile else [False]
        for precision, compiled in itertools.product(precisions, modes):
            rows: dict[str, dict[str, Any]] = {}
            warmup = args.compile_warmup if compiled else args.warmup
            for name in args.objectives:
                objective = {"name": name, "teacher": {"path": teacher}} if name == "itvm" else {"name": name}
                config = make_config(args, objective, precision, warmup, compiled)
                rows[name] = measure(config, warmup, args.device)
            key = precision + ("+compile" if compiled else "")
            print_table(f"precision {precision}" + (", compiled" if compiled else ""), rows)
            results["precisions"][key] = rows
    if args.compare_precision:
        fp32, bf16 = results["precisions"]["float32"], results["precisions"]["bfloat16"]
        speedups = {name: fp32[name]["ms_per_step"] / bf16[name]["ms_per_step"] for name in args.objectives}
        results["bfloat16_speedup"] = speedups
        print("\nbfloat16 speed-up (float32 ms/step / bfloat16 ms/step):")
        print(", ".join(f"{name} {value:.2f}x" for name, value in speedups.items()))
    if args.compare_compile:
        results["compile_speedup"] = {}
        for precision in precisions:
            eager, compiled = results["precisions"][precision], results["precisions"][precision + "+compile"]
            speedups = {name: eager[name]["ms_per_step"] / compiled[name]["ms_per_step"] for name in args.objectives}
            results["compile_speedup"][precision] = speedups
            print(f"\ncompile speed-up, {precision} (eager ms/step / compiled ms/step; warm-up wall time):")
            for name in args.objectives:
                warm = f"warm-up {compiled[name]['warmup_s']:.1f} s against {eager[name]['warmup_s']:.1f} s"
                print(f"  {name} {speedups[name]:.2f}x ({warm})")
    write_results(args.out, results)


if __name__ == "__main__":
    main()
