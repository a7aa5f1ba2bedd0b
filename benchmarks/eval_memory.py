"""Peak memory of evaluation against `eval.num_samples`: it must stay flat (chunked sampling, KL counts accumulated,
SW2 / MMD on a bounded subset), whatever the number of samples.

Each N runs in a fresh process (peak RSS is per process): a checkerboard MLP (64 x 3, untrained: its cost, not its
quality, is measured), metrics kl, sw2, mmd at 1 sampling step. Target: the peak at the largest N within 10% of the
peak at the smallest.

    .venv/bin/python benchmarks/eval_memory.py [--sizes 100000,1000000,4000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _results import write_results

PROBE = """
import json, resource, sys, time
import torch
from mgm_studies import evaluation
from mgm_studies.builders import build_model
from mgm_studies.config import parse_run_config
from mgm_studies.data import data_shape
from mgm_studies.runs import build_run

n = int(sys.argv[1])
config = parse_run_config({
    "data": {"name": "checkerboard"},
    "model": {"hidden": 64, "depth": 3, "embedding_dim": 32},
    "train": {"steps": 1},
    "eval": {"metrics": ["kl", "sw2", "mmd"], "steps": [1], "num_samples": n, "reference_samples": 100000},
})
parts = build_run(config)
dataset, objective = parts.dataset, parts.objective
model = build_model(config.model, data_shape(dataset), objective.model_kind).eval()
start = time.perf_counter()
result = evaluation.evaluate(model, objective, dataset, config.eval, step=0, device=torch.device("cpu"))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"num_samples": n, "seconds": seconds, "peak_rss_mib": peak, "kl": result.metrics["kl/nfe-1"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,4000000", help="numbers of samples, comma-separated")
    args = parser.parse_args()
    rows = []
    for n in (int(v) for v in args.sizes.split(",")):
        done = subprocess.run([sys.executable, "-c", PROBE, str(n)], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"num_samples {n:>10,}: peak RSS {row['peak_rss_mib']:7.0f} MiB, {row['seconds']:6.1f} s")
    growth = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(f"peak RSS at the largest N / at the smallest: {growth:.3f} (target <= 1.10)")
    write_results("benchmarks/results/eval_memory.json", {"rows": rows, "growth": growth})


if __name__ == "__main__":
    main()
