"""What search_spaces/digits16_self_distillation.yaml costs on one GPU: milliseconds per training step of each of its
objectives (lsd, esd, psd_midpoint; U-Net 64/128/128 at 16x16, batch 256, RAdam), one evaluation's sampling (5000
samples at 1, 2 and 4 steps), the step in bfloat16 and bfloat16 + channels-last, and the step of lsd and
psd_midpoint with 1 and with 4 processes sharing the GPU (the space asks for 0.25 GPU a trial). From these: the
study's GPU-hours at 1 and 4 trials per GPU. Needs CUDA; about 5 minutes on an H200. Measured figures:
benchmarks/README.md.

    python benchmarks/gpu_study_cost.py [--steps 30] [--packing-steps 8] [--out benchmarks/results/gpu_study_cost.json]

The FID feature pass (a small classifier over 5000 16x16 images) is left out of the evaluation time: it is a few
forward passes of a network far smaller than the U-Net.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from _results import write_results

from mgm_studies.config import parse_run_config
from mgm_studies.evaluation import generate
from mgm_studies.runs import build_run
from mgm_studies.training.trainer import Trainer

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "digits16_self_distillation.yaml"
OBJECTIVES = ("lsd", "esd", "psd_midpoint")


def trainer(objective: str, device: str = "cuda", **train) -> Trainer:
    """The space's trial of `objective`, with `train` fields changed (precision, channels_last)."""
    base = yaml.safe_load(SPACE.read_text())["base"]
    base["objective"] = {"name": objective, "diagonal_fraction": 0.75}
    base["resources"] = {"device": device}
    base["eval"]["metrics"] = ["sw2"]  # the FID extractor is not needed to time steps and sampling
    base["train"].update(train)
    config = parse_run_config(base)
    return Trainer(config, build_run(config, device=device), device=device)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ms_per_step(run: Trainer, steps: int, warmup: int = 5, repeats: int = 3) -> list[float]:
    for _ in range(warmup):
        run.train_step()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            run.train_step()
        sync()
        times.append((time.perf_counter() - start) / steps * 1e3)
    return times


def sampling_s(run: Trainer, n: int = 5000, device: str = "cuda") -> dict[str, float]:
    model = run.ema.averaged_model(run.model, run.config.evaluated_ema()).eval()
    noise = run.interpolant.noise((n, 1, 16, 16), torch.Generator().manual_seed(0))
    out = {}
    for k in (1, 2, 4):
        sync()
        start = time.perf_counter()
        generate(run.objective, model, noise, k, torch.device(device))
        sync()
        out[f"nfe-{k}"] = time.perf_counter() - start
    return out


def worker(objective: str, steps: int) -> None:
    """One process of the packed measurement: prints its median ms per step as JSON."""
    run = trainer(objective)
    print(json.dumps({"ms": statistics.median(ms_per_step(run, steps))}), flush=True)


def packed(objective: str, processes: int, steps: int) -> list[float]:
    jobs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", objective, "--steps", str(steps)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    return [json.loads(job.communicate()[0].strip().splitlines()[-1])["ms"] for job in jobs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--packing-steps", type=int, default=8, help="timed steps of each packed process")
    parser.add_argument("--worker")
    parser.add_argument("--out", default="benchmarks/results/gpu_study_cost.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_study_cost.py times the study on CUDA: no CUDA device is visible")
    if args.worker:
        return worker(args.worker, args.steps)
    space = yaml.safe_load(SPACE.read_text())
    total_steps, interval = space["base"]["train"]["steps"], space["base"]["eval"]["interval"]
    trials = len(space["space"]["objective"]["grid"]) * len(space["seeds"])
    out: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "objectives": {}}
    for name in OBJECTIVES:
        run = trainer(name)
        times = ms_per_step(run, args.steps)
        out["objectives"][name] = {
            "ms_per_step": statistics.median(times),
            "repeats_ms": times,
            "sampling_5000_s": sampling_s(run),
        }
        print(name, out["objectives"][name], flush=True)
        del run
        torch.cuda.empty_cache()
        write_results(args.out, out)
    for name, train in {
        "bfloat16": {"precision": "bfloat16"},
        "bfloat16 channels_last": {"precision": "bfloat16", "channels_last": True},
    }.items():
        for objective in ("lsd", "psd_midpoint"):
            run = trainer(objective, **train)
            out["objectives"][objective][f"{name} ms_per_step"] = statistics.median(ms_per_step(run, 10, 3))
            del run
            torch.cuda.empty_cache()
        write_results(args.out, out)
    for objective in ("lsd", "psd_midpoint"):
        alone = packed(objective, 1, args.packing_steps)
        four = packed(objective, 4, args.packing_steps)
        out[f"packing {objective}"] = {
            "1_process_ms": alone,
            "4_processes_ms": four,
            "throughput_gain": 4 * alone[0] / statistics.mean(four),
        }
        print("packing", objective, out[f"packing {objective}"], flush=True)
        write_results(args.out, out)
    gain = min(out[f"packing {objective}"]["throughput_gain"] for objective in ("lsd", "psd_midpoint"))
    evals = total_steps // interval
    trial_s = {
        name: total_steps * row["ms_per_step"] / 1e3 + evals * sum(row["sampling_5000_s"].values())
        for name, row in out["objectives"].items()
    }
    one_per_gpu = sum(trial_s.values()) * trials / len(trial_s) / 3600
    out["study_gpu_hours"] = {
        "trial_s": trial_s,
        "1_per_gpu": one_per_gpu,
        "4_per_gpu_at_most": one_per_gpu / gain,
        "trials": trials,
    }
    print("study", out["study_gpu_hours"], flush=True)
    write_results(args.out, out)


if __name__ == "__main__":
    main()
