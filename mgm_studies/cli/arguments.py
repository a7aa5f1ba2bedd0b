"""What the verbs share: how a verb's parser is made, argument types (a bad value is refused by the parser, naming
the argument), the API's errors named as the CLI's arguments, the `--device` choice and how metrics are printed."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from mgm_studies.configbase import ConfigError
from mgm_studies.names import check_name

EPILOG = (
    "Environment: MLFLOW_TRACKING_URI (default sqlite:///$PWD/mlflow.db), "
    "MGM_STUDIES_CHECKPOINTS (default ./checkpoints)."
)


def add_verb(
    verbs: argparse._SubParsersAction, handler: Callable, help: str, epilog: str | None = EPILOG
) -> argparse.ArgumentParser:
    """The parser of the verb `handler` runs (`cmd_train_extractor`: `train-extractor`), described by its docstring."""
    name = handler.__name__.removeprefix("cmd_").replace("_", "-")
    parser = verbs.add_parser(name, help=help, description=handler.__doc__, epilog=epilog, exit_on_error=False)
    parser.set_defaults(handler=handler)
    return parser


def overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """`--set KEY=VALUE`, repeatable: config values by dotted key (yaml_input.py reads them)."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def at_least(low: int) -> Callable[[str], int]:
    """An integer argument >= `low`."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return integer


def steps(text: str) -> list[int]:
    """Numbers of sampling steps: positive integers separated by commas."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def ema(text: str) -> float | str:
    """An EMA decay, or 'raw' (the raw weights)."""
    if text == "raw":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'raw' or a tracked EMA decay, got {text!r}") from None


def parquet(text: str) -> Path:
    if Path(text).suffix != ".parquet":
        raise argparse.ArgumentTypeError(f"expected a .parquet file name, got {text!r}")
    return Path(text)


def name(text: str) -> str:
    """A study or experiment name (names.py): one plain path component, so it can name a folder."""
    try:
        return check_name(text, "")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.problems[0][1]) from None


def device(choice: str) -> str:
    """`auto` -> cuda when a CUDA device is visible, else cpu; `cuda` with none visible is refused."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError.single("resources.device", "'cuda' was asked for but no CUDA device is visible")
    return choice


def print_metrics(metrics: dict[str, float]) -> None:
    for key in sorted(metrics):
        print(f"  {key:<22} {metrics[key]:.6g}")


@contextlib.contextmanager
def naming(names: dict[str, str]) -> Iterator[None]:
    """The API's errors, naming the CLI's arguments (`names`: the API's argument -> the CLI's) instead of its own."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError([(names.get(field, field), message) for field, message in exc.problems]) from None
