"""The base of every config model, and the error that names a config field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Frozen, and an unknown or misspelt key is an error that names it (style guide, rule 3)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """Invalid user input. Each problem is a dotted field path (`train.optimizer.lr`) and what was expected."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{field}: {message}" if field else message for field, message in problems))

    @classmethod
    def single(cls, field: str, message: str) -> ConfigError:
        return cls([(field, message)])
