"""Steps per second of the Trainer against a bare PyTorch loop doing the same work, side by side in one process.

Same model, objective, batch, optimiser, gradient clipping and EMA decays; the bare loop has no reporting, no
divergence check, no LR schedule and no checkpoint logic. Each round runs both loops back to back (alternating
which goes first); the ratio is the median over rounds of the paired ratios, which cancels slow drifts of a shared
machine's speed. Target: Trainer / bare >= 0.95.

    .venv/bin/python benchmarks/trainer_overhead.py [--steps 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _results import write_results

from mgm_studies.builders import build_model
from mgm_studies.config import parse_run_config
from mgm_studies.runs import trainer_for

CASES = {
    # A small network and batch, where per-step overhead shows most.
    "mlp64x3-batch128": {"hidden": 64, "depth": 3, "batch": 128},
    # The demo's network and batch.
    "mlp256x4-batch512": {"hidden": 256, "depth": 4, "batch": 512},
}


def make_config(case: dict, steps: int):
    return parse_run_config(
        {
            "data": {"name": "checkerboard"},
            "model": {"hidden": case["hidden"], "depth": case["depth"]},
            "train": {
                "steps": steps,
                "batch_size": case["batch"],
                "ema_decays": [0.999, 0.9999],
                "grad_clip": 1.0,
                "checkpoint_interval": 10 * steps,
            },
            # The final evaluation is made negligible: this measures the training loop.
            "eval": {"metrics": ["sw2"], "steps": [1], "num_samples": 2},
        }
    )


def trainer_steps_per_s(config) -> float:
    trainer = trainer_for(config)
    start = time.perf_counter()
    trainer.run()
    return config.train.num_steps / (time.perf_counter() - start)


def bare_steps_per_s(config) -> float:
    """The loop a researcher would write by hand, with the same parts."""
    helper = trainer_for(config)  # only to borrow the same dataset, objective and initial weights
    dataset, objective = helper.dataset, helper.objective
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, dataset.dim, objective.model_kind)
    model.load_state_dict(helper.model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.optimizer.lr)
    shadows = {d: [p.detach().clone() for p in model.parameters()] for d in config.train.ema_decays}
    data_gen, noise_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for step in range(config.train.num_steps):
        x1 = dataset.sample(config.train.batch_size, data_gen)
        loss = objective(model, x1, noise_gen).loss.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        with torch.no_grad():
            params = [p.detach() for p in model.parameters()]
            for decay, shadow in shadows.items():
                torch._foreach_lerp_(shadow, params, 1.0 - min(decay, (1.0 + step) / (10.0 + step)))
    return config.train.num_steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--out", default="benchmarks/results/trainer_overhead.json")
    args = parser.parse_args()
    results = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "cases": {},
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps x {args.rounds} rounds")
    print(f"{'case':<20} {'trainer steps/s':>16} {'bare steps/s':>13} {'ratio':>7} {'ratio range':>14}")
    for name, case in CASES.items():
        config = make_config(case, args.steps)
        trainer_steps_per_s(config), bare_steps_per_s(config)  # warm-up
        ours, bare = [], []
        for round_ in range(args.rounds):
            order = [(ours, trainer_steps_per_s), (bare, bare_steps_per_s)]
            for sink, fn in order if round_ % 2 == 0 else order[::-1]:
                sink.append(fn(config))
        ratios = sorted(a / b for a, b in zip(ours, bare, strict=True))
        ratio = statistics.median(ratios)
        results["cases"][name] = {
            "trainer_steps_per_s": ours,
            "bare_steps_per_s": bare,
            "paired_ratios": ratios,
            "median_paired_ratio": ratio,
        }
        spread = f"{ratios[0]:.3f}-{ratios[-1]:.3f}"
        print(
            f"{name:<20} {statistics.median(ours):>16.1f} {statistics.median(bare):>13.1f} {ratio:>7.3f} {spread:>14}"
        )
    write_results(args.out, results)


if __name__ == "__main__":
    main()
