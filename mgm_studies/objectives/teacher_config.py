"""How a distillation objective names its teacher (loaded by `mgm_studies.teachers`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mgm_studies.configbase import StrictModel


class TeacherConfig(StrictModel):
    """Exactly one of `run`, `path`, `config`; `ema` picks the teacher's weights (default: its evaluated EMA)."""

    run: str | None = None
    path: str | None = None
    config: str | None = Field(None, description="an si run config (YAML) trained once and reused")
    ema: float | Literal["raw"] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TeacherConfig:
        given = [name for name in ("run", "path", "config") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"name the teacher by exactly one of run, path, config (got {given or 'none'})")
        return self
