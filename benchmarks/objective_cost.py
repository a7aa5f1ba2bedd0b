"""Seconds per training step of every registered objective relative to `si`, same MLP width/depth and batch, in one run.

Distillation objectives get a teacher of the same size (a velocity MLP with random weights: its cost, not its
quality, is what is measured). A step is everything the Trainer does for one step, all phases included (MGM: critic
and generator; `mgm recipe` is the game after a denoising warm-up, `+fourier` with the Fourier-feature critic's branch).
Rounds interleave the objectives; the median per objective is reported. Target from the cost model: <= 3x `si` for
lmd, itvm, psd, and mgm (warm-up excluded: a warm-up step is an si step).

    .venv/bin/python benchmarks/objective_cost.py [--steps 60] [--rounds 5] [--device cuda] [--batch 512]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _results import write_results

from mgm_studies.builders import build_dataset, build_parts
from mgm_studies.config import parse_run_config
from mgm_studies.models import VelocityMLP
from mgm_studies.objectives import OBJECTIVES
from mgm_studies.training.trainer import Trainer

HIDDEN, DEPTH, BATCH = 256, 4, 512
# Settings of an objective that change its cost, measured as rows of their own (label -> objective, options).
VARIANTS: dict[str, tuple[str, dict]] = {
    "mgm recipe": ("mgm", {"denoiser_steps": 1}),  # after its one warm-up step: the game of the shipped recipe
    "mgm recipe+fourier": ("mgm", {"denoiser_steps": 1, "critic_features": 64}),
}


def make_trainer(name: str, device: str = "cpu", batch: int = BATCH, options: dict | None = None) -> Trainer:
    objective = {"name": name, **(options or {})}
    if "teacher" in OBJECTIVES[name].config.model_fields and not OBJECTIVES[name].objective.teacher_gives_weights:
        objective["teacher"] = {"path": "benchmark-teacher.pt"}  # replaced by an in-memory teacher below
    config = parse_run_config(
        {
            "data": {"name": "checkerboard"},
            "model": {"hidden": HIDDEN, "depth": DEPTH},
            "objective": objective,
            "train": {"steps": 10**6, "batch_size": batch, "ema_decays": [0.999]},
            "eval": {"metrics": ["sw2"], "steps": [1], "num_samples": 2},
        }
    )
    dataset = build_dataset(config)
    torch.manual_seed(0)
    teacher = VelocityMLP(dataset.dim, hidden=HIDDEN, depth=DEPTH).requires_grad_(False).eval().to(device)
    return Trainer(config, build_parts(config, dataset, teacher), device=device)


def seconds_per_step(trainer: Trainer, steps: int) -> float:
    synchronize = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    synchronize()
    return (time.perf_counter() - start) / steps


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--out", default="benchmarks/results/objective_cost.json")
    args = parser.parse_args()
    trainers = {name: make_trainer(name, args.device, args.batch) for name in OBJECTIVES}
    for label, (name, options) in VARIANTS.items():
        trainers[label] = make_trainer(name, args.device, args.batch, options)
    for trainer in trainers.values():
        seconds_per_step(trainer, 5)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            times[name].append(seconds_per_step(trainer, args.steps))
    base = statistics.median(times["si"])
    print(
        f"torch {torch.__version__}, {_device_name(args.device)}; MLP {HIDDEN}x{DEPTH}, batch {args.batch}; "
        f"{args.steps} steps x {args.rounds} rounds"
    )
    print(f"{'objective':<14} {'ms/step':>9} {'x si':>6}")
    results = {}
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {"seconds_per_step": values, "relative_to_si": median / base}
        print(f"{name:<14} {1000 * median:>9.2f} {median / base:>6.2f}")
    write_results(args.out, results)


if __name__ == "__main__":
    main()
