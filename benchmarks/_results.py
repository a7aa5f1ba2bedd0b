"""Where benchmark scripts leave their figures: one JSON file each under benchmarks/results/."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(path: str, results: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
