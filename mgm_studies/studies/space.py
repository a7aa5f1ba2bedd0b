"""Search spaces: a base run config, the dotted keys to vary and how, the metric(s) to optimise, and the seeds.

A space file (platform.md, "Search space (YAML)") is validated as far as it can be without training anything; every
problem is a `ConfigError` naming `space.<dotted key>`, `base.<field>`, `metric`, `search.<field>` ... This module
reads a space file or mapping (relative file names made absolute, pydantic errors turned into named problems) and is
the public surface of the three: the models are in `space_spec`, the checks against the base in `space_checks`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mgm_studies.config import parse_run_config
from mgm_studies.configbase import ConfigError, quote
from mgm_studies.loading import resolve_paths
from mgm_studies.studies.overrides import Override, apply_to_base
from mgm_studies.studies.space_checks import check_files, check_spec
from mgm_studies.studies.space_spec import Axis, StudySpec
from mgm_studies.yaml_input import read_yaml


def is_study_spec(data: Any) -> bool:
    """Whether a parsed YAML file is a search space rather than a run config."""
    return isinstance(data, dict) and ("space" in data or "search" in data)


def load_study_spec(path: str | Path, overrides: Sequence[Override] = ()) -> StudySpec:
    """Read and validate a space file; relative paths in it are relative to the file. `overrides` (`sweep --set`,
    `studies/overrides.py`) are applied to its base first, each one checked."""
    path = Path(path).expanduser().resolve()
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        raise ConfigError([("space file", message) for _, message in exc.problems]) from None
    if not isinstance(data, dict):
        raise ConfigError.single("space file", f"{path} holds a {type(data).__name__}, not a mapping")
    return parse_study_spec(data, source=path, overrides=overrides)


def parse_study_spec(data: dict, *, source: Path | None = None, overrides: Sequence[Override] = ()) -> StudySpec:
    """Validate a search space given as a mapping, `overrides` applied to its base; raises ConfigError listing the
    problems found."""
    if not isinstance(data, dict):
        raise ConfigError.single("", f"a search space is a mapping, got {type(data).__name__}")
    if "source" in data:
        raise ConfigError.single("source", "Extra inputs are not permitted")
    folder = source.parent if source is not None else Path.cwd()
    data = copy.deepcopy(data)
    problems: list[tuple[str, str]] = []
    if "base" in data:
        data["base"], base_problems = _read_base(data["base"], folder)
        problems += base_problems
        if overrides and not base_problems:
            axes = data.get("space") if isinstance(data.get("space"), dict) else {}
            data["base"] = apply_to_base(data["base"], list(overrides), [str(key) for key in axes])
    if isinstance(data.get("space"), dict):
        for key, axis in data["space"].items():
            for kind in ("choice", "grid"):
                if isinstance(axis, dict) and isinstance(axis.get(kind), list):
                    axis[kind] = [resolve_paths(value, str(key), folder) for value in axis[kind]]
    try:
        spec = StudySpec.model_validate({**data, "source": source})
    except ValidationError as exc:
        problems += [_problem(err) for err in exc.errors()]
    if problems:
        raise ConfigError(problems)
    check_spec(spec)
    return spec


def _read_base(base: Any, folder: Path) -> tuple[dict, list[tuple[str, str]]]:
    """The base as a dict with absolute paths, and its problems as a run config (fields prefixed `base.`)."""
    if isinstance(base, str):
        file = (folder / Path(base).expanduser()).resolve()
        try:
            base, folder = read_yaml(file), file.parent
        except ConfigError as exc:
            return {}, [("base", message) for _, message in exc.problems]
    if not isinstance(base, dict):
        return {}, [("base", f"a run config: a file name or an inline mapping, got {type(base).__name__}")]
    base = resolve_paths(base, "", folder)
    try:
        check_files(parse_run_config(base), {})
    except ConfigError as exc:
        return base, [(f"base.{field}" if field else "base", message) for field, message in exc.problems]
    return base, []


def _problem(err: dict) -> tuple[str, str]:
    """A pydantic error of StudySpec as (field, message); an axis's inner location goes into the message."""
    loc = [str(part) for part in err["loc"]]
    cut = 2 if loc[:1] == ["space"] else len(loc)
    message = err["msg"].removeprefix("Value error, ")
    if loc[cut:]:
        message = f"{'.'.join(loc[cut:])}: {message}"
    if err["type"] not in ("missing", "extra_forbidden") and not isinstance(err.get("input"), dict):
        message += f" (got {quote(err.get('input'))})"
    return ".".join(loc[:cut]), message


__all__ = ["Axis", "StudySpec", "is_study_spec", "load_study_spec", "parse_study_spec"]
