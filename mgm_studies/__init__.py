"""mgm-studies: sweeps of generative-model training, tracked in MLflow.

The Python API (`mgm_studies.api`): `results(study, sweep=None)`, a sweep's trials as a DataFrame, and
`load_model(run_id)`, a finished run's `Model` to sample from. They are imported on first use, so that
`import mgm_studies` imports neither torch nor MLflow nor Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mgm_studies.api import Model, load_model, results

__all__ = ["Model", "load_model", "results"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mgm_studies import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
