"""Checks of the GPU path on a CUDA device (issue 6): each option changes how a step runs, not what it computes.

    python scripts/gpu/check_paths.py [--size 8] [--steps 4]

- `data_on_device`: batches gathered from the copy of the image set on the GPU equal `sample()` moved there, and a
  Trainer fed either way reports the same losses;
- `channels_last` and `compile`: the same losses as the default eager layout, to cuDNN / Triton round-off;
- `compile` through a JVP objective (`lsd`) and with bf16 autocast (`itvm` distilling an `si` teacher): finite.
Prints one line per check and exits 1 if any fails. The tests check the same on the CPU.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch

from mgm_studies.config import parse_run_config
from mgm_studies.data.images import make_image_dataset
from mgm_studies.exported import save_exported
from mgm_studies.runs import trainer_for


def config(size: int, objective: dict, **train) -> dict:
    return {
        "data": {"name": "digits", "size": size},
        "model": {"name": "unet", "channels": 32, "channel_mult": [1, 2]},
        "objective": objective,
        "train": {"steps": 100, "batch_size": 128, **train},
        "eval": {"metrics": ["sw2"], "steps": [1], "num_samples": 16, "reference_samples": 16},
    }


def losses(raw: dict, steps: int, device: str) -> list[float]:
    trainer = trainer_for(parse_run_config(raw), device=device)
    out = []
    for _ in range(steps):
        pending = trainer.train_step()
        out.append(float(pending.values[pending.names.index("loss")]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, choices=[8, 16], default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="cuda", help="cuda (the point), or cpu to try the script itself")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}")
    failures = 0

    def check(name: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")

    dataset = make_image_dataset("digits", size=args.size)
    first, second = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    gathered = dataset.sample_on(256, first, torch.device(args.device))
    check(
        f"sample_on({args.device}) == sample().to({args.device})",
        gathered.device.type == args.device and torch.equal(gathered, dataset.sample(256, second).to(args.device)),
        f"{tuple(gathered.shape)} on {gathered.device}",
    )
    si = {"name": "si"}
    base = losses(config(args.size, si), args.steps, args.device)
    host = losses(config(args.size, si, data_on_device=False), args.steps, args.device)
    check("data_on_device: same losses", close(base, host, 1e-5), f"{base} vs {host}")
    last = losses(config(args.size, si, channels_last=True), args.steps, args.device)
    check("channels_last: same losses", close(base, last, 1e-3), f"{last}")
    compiled = losses(config(args.size, si, compile=True), args.steps, args.device)
    check("compile (si): same losses", close(base, compiled, 1e-3), f"{compiled}")
    lsd = {"name": "lsd"}
    eager_lsd = losses(config(args.size, lsd), args.steps, args.device)
    compiled_lsd = losses(config(args.size, lsd, compile=True), args.steps, args.device)
    check("compile through jvp (lsd)", close(eager_lsd, compiled_lsd, 1e-3), f"{eager_lsd} vs {compiled_lsd}")
    with tempfile.TemporaryDirectory() as tmp:
        teacher = trainer_for(parse_run_config(config(args.size, si)), device=args.device)
        teacher.train_step()
        path = save_exported(teacher.export(), Path(tmp) / "teacher.pt")
        itvm = {"name": "itvm", "teacher": {"path": str(path)}}
        fast = config(args.size, itvm, compile=True, precision="bfloat16", channels_last=True)
        values = losses(fast, args.steps, args.device)
        check("itvm, bf16 + compile + channels_last: finite", all(map(math.isfinite, values)), f"{values}")
    print(f"{failures} failed")
    return 1 if failures else 0


def close(first: list[float], second: list[float], rel: float) -> bool:
    """Equal lengths and every pair within `rel` relative difference."""
    return len(first) == len(second) and all(
        abs(a - b) <= rel * max(abs(a), abs(b), 1e-12) for a, b in zip(first, second, strict=True)
    )


if __name__ == "__main__":
    sys.exit(main())
