"""From a file to a run config's data, and from a run config to MLflow params: the loading job, apart from the models.

A run config file is read with `yaml_input`'s bounds, its `--set` overrides applied, and the file names it holds
(`PATH_FIELDS`) made absolute against its folder. A search space's `base` and axis values go through the same
`resolve_paths`, so a file name means the same thing in a run config and in a sweep. Pydantic's errors become
problems naming the dotted field. Free of torch and of the config models: the CLI and the sweep layer share it cheaply.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mgm_studies.configbase import quote
from mgm_studies.yaml_input import read_config

# Fields that hold file names: relative ones are resolved against the file they were written in.
PATH_FIELDS = ("data.path", "objective.teacher.path", "objective.teacher.config", "eval.fid.weights")


def read_run_file(path: str | Path, overrides: list[str] | None = None) -> Any:
    """A run config file's data, not validated yet: `--set` overrides applied, then relative file names made
    absolute against the file's folder."""
    return resolve_paths(read_config(path, overrides), "", Path(path).resolve().parent)


def resolve_paths(value: Any, key: str, folder: Path) -> Any:
    """`value` (set at dotted `key`, "" for the whole config) with its relative file names made absolute."""
    value = copy.deepcopy(value)
    for field in PATH_FIELDS:
        if field == key and isinstance(value, str):
            return _absolute(value, folder)
        if key and not field.startswith(key + "."):
            continue
        *parents, leaf = field[len(key) + 1 if key else 0 :].split(".")
        node = value
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), str):
            node[leaf] = _absolute(node[leaf], folder)
    return value


def _absolute(name: str, folder: Path) -> str:
    """`name` as an absolute path, a relative one taken from `folder`."""
    file = Path(name).expanduser()
    return str(file if file.is_absolute() else (folder / file).resolve())


def validation_problems(exc: ValidationError, data: Any) -> list[tuple[str, str]]:
    """A run config's pydantic errors as (dotted field, message), the input quoted (bounded)."""
    problems = []
    for err in exc.errors():
        message = err["msg"]
        if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            message += f" (got {quote(err['input'])})"
        field = _field_path(err["loc"], data)
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            field += ".name"  # every union here is discriminated by `name`: point at it
        problems.append((field, message))
    return problems


def _field_path(loc: tuple, data: Any) -> str:
    """Dotted field path of a pydantic error location, without the union tags pydantic inserts."""
    parts: list[str] = []
    node = data
    for depth, item in enumerate(loc):
        if isinstance(node, dict):
            if item not in node:
                if depth < len(loc) - 1 or item == node.get("name", "mlp"):
                    continue  # a discriminated-union tag such as 'si' or 'file' (the model's is 'mlp' by default)
                parts.append(str(item))  # a missing field
                break
            node = node[item]
        elif isinstance(node, list) and isinstance(item, int) and item < len(node):
            node = node[item]
        else:
            node = None
        parts.append(str(item))
    return ".".join(parts)


def flatten(config: BaseModel) -> dict[str, str]:
    """Dotted keys to string values (MLflow params); lists stay one value."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            out[prefix] = json.dumps(value) if isinstance(value, list | tuple) else str(value)

    walk("", config.model_dump(mode="json"))
    return out
