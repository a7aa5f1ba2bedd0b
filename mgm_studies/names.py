"""The one character set of study and experiment names: a search space's `name`, `--experiment` of `train`,
`train-extractor` and `sweep`, and `report STUDY`.

A name becomes an MLflow experiment, a Ray Tune folder (`<storage>/<name>-<hash>`) and the report folder
`reports/<name>`, so it must be a single, plain path component: 1 to 128 characters, ASCII letters, digits, `_`, `.`
and `-`, the first a letter or a digit. That leaves out path separators (`/`, `\\`), `.` and `..`, hidden names,
whitespace and control characters, and names that read as command-line options (`-x`).

Dependency-free on purpose (like Ray Tune's `tune/result.py`): whoever takes a name in imports the rule from here.
"""

from __future__ import annotations

import re

from mgm_studies.configbase import ConfigError

MAX_NAME_LENGTH = 128
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
NAME_RULE = (
    f"1 to {MAX_NAME_LENGTH} characters from ASCII letters, digits, '_', '.' and '-', the first a letter or digit "
    f"(pattern {NAME_PATTERN})"
)
_NAME = re.compile(NAME_PATTERN)
_SHOWN = 200  # characters of a refused value quoted back


def name_problem(value: object) -> str | None:
    """What is wrong with `value` as a study or experiment name, or None if it is one."""
    if not isinstance(value, str):
        return f"a name is a string of {NAME_RULE}"
    # fullmatch, not match: Python's `$` also matches before a trailing newline.
    if _NAME.fullmatch(value) is None:
        return f"expected a name of {NAME_RULE}"
    return None


def check_name(value: str, field: str) -> str:
    """`value` if it is a valid name; otherwise a ConfigError on `field` quoting (at most 200 characters of) it."""
    problem = name_problem(value)
    if problem is None:
        return value
    shown = repr(value[:_SHOWN]) if isinstance(value, str) else type(value).__name__
    if isinstance(value, str) and len(value) > _SHOWN:
        shown += f"... ({len(value)} characters)"
    raise ConfigError.single(field, f"{problem}, got {shown}")


__all__ = ["MAX_NAME_LENGTH", "NAME_PATTERN", "NAME_RULE", "check_name", "name_problem"]
