"""`sweep --set KEY=VALUE` and the short resource flags: overrides of a space's base run config, for every trial.

Values are read like `train --set` (`yaml_input.apply_overrides`: YAML scalars, lists or mappings, with its bounds);
each override is applied to the base in turn and the result validated as a run config, so a bad key or value is
refused (exit 2) naming `--set KEY` (or the flag) before anything starts. File names in a value are taken from the
working directory.

The short flags are per-trial totals written onto the base's `resources` section: `--workers-per-trial N` is
`resources.workers`; `--gpus-per-trial X` and `--cpus-per-trial X` are split evenly over the trial's workers
(`resources.gpus_per_worker = X / workers`: `--gpus-per-trial 0.25` packs four one-worker trials on a GPU). A flag and
a `--set` of the same field (or of the whole `resources` section) conflict.

Identity (the space hash, so `--resume`): `resources.*` overrides do not change what a trial trains, only where, and
the hash leaves the base's `resources` out; any other override changes the base, and so the hash.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from mgm_studies.configbase import ConfigError
from mgm_studies.loading import resolve_paths
from mgm_studies.names import SEED
from mgm_studies.yaml_input import apply_overrides, split_override

RESOURCES = "resources"


@dataclass(frozen=True)
class Override:
    """One `dotted.key=value` override and the option it came from (`--set KEY`, `--gpus-per-trial`). A per-trial
    value (the GPU and CPU flags) is divided by the trial's `resources.workers` when it is applied."""

    text: str
    option: str
    per_trial: bool = False

    @property
    def key(self) -> str:
        return self.text.partition("=")[0]

    def shown(self) -> str:
        """As given on the command line: `KEY=VALUE`, or `--gpus-per-trial=0.25`."""
        return self.text if self.option.startswith("--set") else f"{self.option}={self.text.partition('=')[2]}"


def sweep_overrides(
    sets: list[str],
    *,
    gpus_per_trial: float | None = None,
    cpus_per_trial: float | None = None,
    workers_per_trial: int | None = None,
) -> list[Override]:
    """The `--set` overrides, then the short flags as `resources.*` overrides (workers first, so that the per-trial
    GPUs and CPUs are split over the final number of workers)."""
    overrides = []
    for text in sets:
        key, _ = split_override(text)
        overrides.append(Override(text, f"--set {key}"))
    flags = (
        ("--workers-per-trial", "workers", workers_per_trial, 1),
        ("--gpus-per-trial", "gpus_per_worker", gpus_per_trial, 0),
        ("--cpus-per-trial", "cpus_per_worker", cpus_per_trial, None),
    )
    for flag, field, value, low in flags:
        if value is None:
            continue
        for given in overrides:
            if given.key in (RESOURCES, f"{RESOURCES}.{field}"):
                raise ConfigError.single(f"{given.option} / {flag}", f"both set resources.{field}: give one of them")
        if not (value >= low if low is not None else value > 0):  # NaN is refused too
            raise ConfigError.single(flag, f"must be {f'>= {low}' if low is not None else '> 0'}, got {value}")
    for flag, field, value, _ in flags:
        if value is not None:
            overrides.append(Override(f"{RESOURCES}.{field}={json.dumps(value)}", flag, per_trial=field != "workers"))
    return overrides


def apply_to_base(base: dict, overrides: list[Override], axes: Collection[str]) -> dict:
    """`base` (a run config whose file names are absolute) with `overrides` applied one at a time, each result
    validated; a ConfigError names the override's option. A key swept by the space (or inside a swept section), or
    the seed, is refused: every trial would replace the override."""
    from mgm_studies.config import parse_run_config
    from mgm_studies.studies.space_checks import check_files, get_dotted, no_such_field
    from mgm_studies.studies.space_spec import set_dotted

    data = copy.deepcopy(base)
    for override in overrides:
        key = override.key
        swept = [axis for axis in axes if key == axis or key.startswith(axis + ".")]
        if swept or key == SEED:
            why = f"swept by the space (space.{swept[0]})" if swept else "set by the space's `seeds`"
            raise ConfigError.single(override.option, f"{key} is {why}: each trial would replace this override")
        text = override.text
        if override.per_trial:  # a total per trial, split over its workers (validated by the previous override)
            resources = data.get(RESOURCES) if isinstance(data.get(RESOURCES), dict) else {}
            text = f"{key}={_decimal(float(text.partition('=')[2]) / int(resources.get('workers', 1)))}"
        try:
            apply_overrides(data, [text])
        except ConfigError as exc:
            raise ConfigError([(override.option, message) for _, message in exc.problems]) from None
        set_dotted(data, key, resolve_paths(get_dotted(data, key), key, Path.cwd()))
        try:
            check_files(parse_run_config(data), {})  # named files exist, a config teacher fits
        except ConfigError as exc:
            field, message = exc.problems[0]
            message = message.removeprefix("Value error, ")
            if message == "Extra inputs are not permitted":  # pydantic's words for a key its model does not have
                message = f"not a run-config field: {no_such_field(data, field)}"
            raise ConfigError.single(override.option, f"{field}: {message}" if field != key else message) from None
    return data


def _decimal(value: float) -> str:
    """`value` as YAML reads a float (YAML 1.1 takes `1e-05` for a string): fixed point."""
    text = f"{value:.15f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
