"""GPU check of the Trainer and the objectives (run on a machine with CUDA; not part of the test suite).

1. Resume on CUDA: a run interrupted at step 100 and resumed from its checkpoint ends with the same weights as the
   uninterrupted run (max abs difference reported; 0 means bit-exact).
2. bfloat16 autocast: `train.precision: bfloat16` trains every objective for a few steps with finite losses.
3. Learning on the GPU: the checkerboard `si` teacher (configs/checkerboard_si.yaml), `itvm` with each
   intermediate-time strategy distilled from it, and MGM on eight_gaussians; KL on the NFE ladder and seconds.

    python scripts/gpu/check_trainer.py [--out benchmarks/results/gpu_check.json] [--steps 4000]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import tempfile
import time
import traceback
from pathlib import Path

import torch
import yaml

from mgm_studies.config import parse_run_config
from mgm_studies.exported import save_exported
from mgm_studies.objectives import OBJECTIVES
from mgm_studies.runs import trainer_for

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def load(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


def resume_check(device: str) -> dict:
    config = parse_run_config(
        {
            "data": {"name": "checkerboard"},
            "model": {"hidden": 256, "depth": 4},
            "train": {"steps": 200, "batch_size": 1024, "checkpoint_interval": 50, "ema_decays": [0.99]},
            "eval": {"metrics": ["kl"], "steps": [8], "num_samples": 10000, "interval": 0},
        }
    )
    with tempfile.TemporaryDirectory() as whole, tempfile.TemporaryDirectory() as parts:
        reference = trainer_for(config, checkpoint_dir=Path(whole), device=device)
        reference.run()
        first = trainer_for(config, checkpoint_dir=Path(parts), device=device)
        with contextlib.suppress(KeyboardInterrupt):  # the clean stop after step 100, checkpoint written
            first.run(should_stop=lambda: first.step >= 100)
        second = trainer_for(config, checkpoint_dir=Path(parts), device=device)
        resumed_at = second.step
        second.run()
        diff = max(
            (a - b).abs().max().item()
            for a, b in zip(reference.model.state_dict().values(), second.model.state_dict().values(), strict=True)
        )
    return {"resumed_at": resumed_at, "max_abs_weight_difference": diff}


def bf16_check(device: str) -> dict:
    results = {}
    for name in OBJECTIVES:
        objective = {"name": name}
        data = "eight_gaussians" if name == "mgm" else "checkerboard"
        config = {
            "data": {"name": data},
            "model": {"hidden": 128, "depth": 3},
            "objective": objective,
            "train": {"steps": 50, "batch_size": 512, "precision": "bfloat16", "checkpoint_interval": 10**6},
            "eval": {"metrics": ["kl"], "steps": [1], "num_samples": 2000},
        }
        if "teacher" in OBJECTIVES[name].config.model_fields:  # an untrained teacher: only finiteness is checked
            objective["teacher"] = {"path": str(_random_teacher(device))}
        result = trainer_for(parse_run_config(config), device=device).run()
        results[name] = {"status": result.status, "kl/nfe-1": result.metrics.get("kl/nfe-1")}
    return results


_TEACHER: Path | None = None


def _random_teacher(device: str) -> Path:
    global _TEACHER
    if _TEACHER is None:
        config = parse_run_config(
            {
                "data": {"name": "checkerboard"},
                "model": {"hidden": 128, "depth": 3},
                "objective": {"name": "si"},
                "train": {"steps": 1},
            }
        )
        trainer = trainer_for(config, device=device)
        _TEACHER = save_exported(trainer.export(), Path(tempfile.mkdtemp()) / "teacher.pt")
    return _TEACHER


def learning(device: str, steps: int, out: dict) -> None:
    teacher_config = load("checkerboard_si.yaml")
    teacher_config["train"]["steps"] = steps
    start = time.perf_counter()
    teacher = trainer_for(parse_run_config(teacher_config), device=device)
    metrics = teacher.run().metrics
    out["teacher_si"] = {"seconds": time.perf_counter() - start, **_kl(metrics)}
    path = save_exported(teacher.export(), Path(tempfile.mkdtemp()) / "teacher.pt")
    for strategy in ("t_minus_tau", "s_plus_tau", "uniform"):
        config = load("checkerboard_itvm.yaml")
        config["objective"].update(teacher={"path": str(path)}, intermediate_time=strategy)
        config["train"]["steps"] = steps
        out[f"itvm_{strategy}"] = _train(config, device)
    config = load("eight_gaussians_mgm.yaml")
    config["train"]["steps"] = steps
    out["mgm"] = _train(config, device)


def _train(config: dict, device: str) -> dict:
    config = copy.deepcopy(config)
    config["eval"]["interval"] = config["train"]["steps"] // 4
    start = time.perf_counter()
    trainer = trainer_for(parse_run_config(config), device=device)
    metrics = trainer.run().metrics
    return {"seconds": time.perf_counter() - start, **_kl(metrics)}


def _kl(metrics: dict) -> dict:
    return {k: round(v, 4) for k, v in metrics.items() if k.startswith("kl/")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--out", default="benchmarks/results/gpu_check.json")
    args = parser.parse_args()
    name = torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else "cpu"
    out: dict = {"device": name, "torch": torch.__version__}
    for check, run in (
        ("resume", lambda: resume_check(args.device)),
        ("bfloat16", lambda: bf16_check(args.device)),
        ("learning", lambda: learning(args.device, args.steps, out.setdefault("learning", {}))),
    ):
        start = time.perf_counter()
        try:
            result = run()
        except Exception as error:  # report every check, even when one breaks
            traceback.print_exc()
            result = {"error": f"{type(error).__name__}: {error}"}
        if result is not None:
            out[check] = result
        print(check, f"{time.perf_counter() - start:.1f}s", out.get(check), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
