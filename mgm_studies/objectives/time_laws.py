"""Laws of the training time t on [t_eps, 1 - t_eps] (spec section 2)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mgm_studies.configbase import StrictModel


class TimeLawConfig(StrictModel):
    """`uniform` on [t_eps, 1 - t_eps], or `logit_normal(mean, std)` clamped to the same interval."""

    name: Literal["uniform", "logit_normal"] = "uniform"
    t_eps: float = Field(0.0, ge=0.0, lt=0.5, description="keep t inside [t_eps, 1 - t_eps]")
    mean: float = Field(0.0, description="logit_normal: mean of the logit")
    std: float = Field(1.0, gt=0.0, description="logit_normal: std of the logit")


def sample_times(law: TimeLawConfig, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """Draw n times, shape (n,), float32, from `law`."""
    lo, hi = law.t_eps, 1.0 - law.t_eps
    if law.name == "uniform":
        return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)
    logits = law.mean + law.std * torch.randn(n, generator=generator, device=device)
    return torch.sigmoid(logits).clamp(lo, hi)
