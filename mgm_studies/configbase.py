"""The base of every config model, the error that names a config field, and the bounds every config shares."""

from __future__ import annotations

import reprlib
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**32 - 1  # numpy's and Optuna's seeds are 32-bit; torch's Generator takes these too
MAX_MESSAGE = 600  # characters of one problem's message: a hostile value never floods the terminal

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
PositiveInt = Annotated[int, Field(ge=1)]

_QUOTE = reprlib.Repr()  # Python 3.11's Repr takes no arguments: the limits are attributes
_QUOTE.maxlevel, _QUOTE.maxstring, _QUOTE.maxother, _QUOTE.maxlong = 2, 80, 80, 40
_QUOTE.maxdict = _QUOTE.maxlist = _QUOTE.maxtuple = _QUOTE.maxset = 4


def quote(value: Any) -> str:
    """A bounded repr of a user's value: deep or long inputs are elided, never expanded whole (a YAML alias bomb
    can be a small document that stands for a huge one)."""
    return _QUOTE.repr(value)


class StrictModel(BaseModel):
    """Frozen, and an unknown or misspelt key is an error that names it (style guide, rule 3). Floats must be finite:
    `.inf`, `.nan` or `1e999` is refused with the field named, never trained on."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ConfigError(ValueError):
    """Invalid user input. Each problem is a dotted field path (`train.optimizer.lr`) and what was expected.

    Fields and messages are cut to `MAX_MESSAGE` characters, so an error never prints more than a few lines per
    problem whatever it quotes."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = [(_cut(field, 200), _cut(message, MAX_MESSAGE)) for field, message in problems]
        super().__init__("\n".join(f"{field}: {message}" if field else message for field, message in self.problems))

    @classmethod
    def single(cls, field: str, message: str) -> ConfigError:
        return cls([(field, message)])


def _cut(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 30]} ... ({len(text)} characters)"
