"""Search spaces: a base run config, the dotted keys to vary and how, the metric(s) to optimise, and the seeds.

A space file (platform.md, "Search space (YAML)") is validated as far as it can be without training anything: the
base must be a valid run config, every axis value (each choice, both ends of a range) must make a valid run config
when applied to the base, and the metric must be one the trials report. Every problem is a `ConfigError` naming
`space.<dotted key>`, `base.<field>`, `metric`, `search.<field>` ...
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, Strict, ValidationError, ValidationInfo, field_validator, model_validator

from mgm_studies.config import RunConfig, load_run_config, parse_run_config, read_yaml
from mgm_studies.configbase import ConfigError, StrictModel
from mgm_studies.teachers import check_compatible

AxisKind = Literal["choice", "grid", "uniform", "loguniform", "int"]
Label = str | int | float | bool | None
PositiveInt = Annotated[int, Field(ge=1)]
_KINDS: tuple[AxisKind, ...] = ("choice", "grid", "uniform", "loguniform", "int")
# Fields that hold file names: relative ones are resolved against the file they were written in.
_PATH_FIELDS = ("data.path", "objective.teacher.path", "objective.teacher.config")
_METRIC = re.compile(r"^(?P<metric>[a-z0-9_]+)/nfe-(?P<steps>[0-9]+)$")
_MAX_COMBINATIONS = 512  # an all-discrete space up to this size has every combination checked


class Axis(StrictModel):
    """One distribution over the values of a dotted key: exactly one of the five fields is set.

    `choice` (sampled) and `grid` (every value, Tune's grid search) hold any YAML values, whole sections included;
    `uniform` and `loguniform` are [low, high] floats, `int` is [low, high] inclusive integers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    choice: list[Any] | None = None
    grid: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    int_: tuple[Annotated[int, Strict()], Annotated[int, Strict()]] | None = Field(None, alias="int")

    @model_validator(mode="after")
    def _one_distribution(self) -> Axis:
        given = [kind for kind in _KINDS if self._field(kind) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one distribution of {', '.join(_KINDS)} (got {', '.join(given) or 'none'})")
        kind, values = given[0], self._field(given[0])
        if kind in ("choice", "grid"):
            if not values:
                raise ValueError(f"{kind} needs at least one value")
            canonical = [json.dumps(v, sort_keys=True, default=str) for v in values]
            if len(set(canonical)) != len(canonical):
                raise ValueError(f"{kind} values must be unique, got {values}")
        elif values[0] >= values[1]:
            raise ValueError(f"{kind} needs low < high, got [{values[0]}, {values[1]}]")
        elif kind == "loguniform" and values[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {values[0]}")
        return self

    def _field(self, kind: str) -> Any:
        return self.int_ if kind == "int" else getattr(self, kind)

    @property
    def kind(self) -> AxisKind:
        return next(kind for kind in _KINDS if self._field(kind) is not None)

    @property
    def discrete(self) -> bool:
        return self.kind in ("choice", "grid")

    @property
    def values(self) -> list:
        """choice / grid: the values; uniform / loguniform / int: [low, high]."""
        return list(self._field(self.kind))

    def labels(self) -> list[Label]:
        """choice / grid: stand-ins a searcher can hold (Optuna categoricals take only None/bool/int/float/str).

        A primitive is its own label; a mapping's label is its `name` when every mapping here has a distinct one,
        a list's is its JSON; anything left ambiguous is `option-<i>`.
        """
        if not self.discrete:
            raise ValueError(f"a {self.kind} axis has no labels")
        values = self.values
        mappings = [v for v in values if isinstance(v, dict)]
        names = [m.get("name") for m in mappings]
        named = all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
        labels: list[Label] = []
        for i, value in enumerate(values):
            if isinstance(value, dict):
                labels.append(value["name"] if named else f"option-{i}")
            elif isinstance(value, list):
                labels.append(json.dumps(value))
            else:
                labels.append(value)
        keys = [(type(label), label) for label in labels]
        # A structured value whose label another value has too (a name equal to a primitive value) gets a number.
        return [
            f"option-{i}" if isinstance(value, dict | list) and keys.count(keys[i]) > 1 else labels[i]
            for i, value in enumerate(values)
        ]

    def value_for(self, label: Label) -> Any:
        """The value behind `label` (the inverse of `labels`), a fresh copy."""
        labels = self.labels()
        for i, candidate in enumerate(labels):
            if type(candidate) is type(label) and candidate == label:
                return copy.deepcopy(self.values[i])
        for i, candidate in enumerate(labels):  # a numpy scalar or an int for a float, from a searcher
            if candidate == label and not isinstance(candidate, bool):
                return copy.deepcopy(self.values[i])
        raise KeyError(f"{label!r} is not one of the labels {labels}")

    def default(self) -> Any:
        """One value of the axis: the first choice, the midpoint of a range (geometric for loguniform)."""
        if self.discrete:
            return copy.deepcopy(self.values[0])
        low, high = self.values
        if self.kind == "loguniform":
            return math.sqrt(low * high)
        return (low + high) / 2 if self.kind == "uniform" else round((low + high) / 2)


class SchedulerSpec(StrictModel):
    """`fifo` runs every trial to the end; `asha` stops the worse ones at evaluations (`grace_period` of them)."""

    name: Literal["fifo", "asha"] = "fifo"
    grace_period: PositiveInt = 1
    reduction_factor: float = Field(2.0, gt=1.0)


class SearchSpec(StrictModel):
    """`num_samples`: configurations drawn by optuna / random (default 8); for `grid`, repeats of the grid
    (default 1). `optuna-nsga2` takes one metric or several."""

    algorithm: Literal["optuna", "optuna-nsga2", "random", "grid"] = "optuna"
    num_samples: PositiveInt = 8
    max_concurrent: PositiveInt | None = None
    seed: int = 0
    scheduler: SchedulerSpec = SchedulerSpec()

    @model_validator(mode="before")
    @classmethod
    def _grid_runs_once(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("algorithm") == "grid" and "num_samples" not in data:
            return {**data, "num_samples": 1}
        return data


class StudySpec(StrictModel):
    """A validated search space. `base` is a plain dict whose file paths are absolute; `space` maps dotted run-config
    keys to axes; `metric` and `mode` are lists of one length; `source` is the space file (None: built from a dict)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str | None = None
    base: dict[str, Any]
    metric: list[str] = Field(min_length=1)
    mode: list[Literal["min", "max"]]  # one mode in the file applies to every metric (default min)
    search: SearchSpec = SearchSpec()
    space: dict[str, Axis] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0])
    source: Path | None = None

    @field_validator("metric", mode="before")
    @classmethod
    def _one_metric(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError(f"a number of seeds is >= 1, got {value}")
            return list(range(value))
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value) or min(value) < 0:
            raise ValueError(f"seeds are a non-empty list of unique integers >= 0, got {value}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _one_mode_for_all(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(mode := data.get("mode", "min"), str):
            metric = data.get("metric")
            return {**data, "mode": [mode] * (len(metric) if isinstance(metric, list) else 1)}
        return data

    @field_validator("mode")
    @classmethod
    def _modes_match(cls, mode: list[str], info: ValidationInfo) -> list[str]:
        metric = info.data.get("metric")
        if metric is not None and len(mode) != len(metric):
            raise ValueError(f"give one mode, or one per metric ({len(metric)}), got {mode}")
        return mode

    @property
    def multi_objective(self) -> bool:
        return len(self.metric) > 1

    def default_params(self) -> dict[str, Any]:
        """One assignment (dotted key -> value): the first choice, the middle of each range."""
        return {key: axis.default() for key, axis in self.space.items()}

    def trial_dict(self, params: dict[str, Any], seed: int) -> dict:
        """The base with `params` (dotted key -> value, not label) applied and `train.seed = seed`, unparsed."""
        unknown = sorted(set(params) - set(self.space))
        if unknown:
            raise ConfigError.single("space", f"parameters {unknown} are not axes of this space ({sorted(self.space)})")
        data = copy.deepcopy(self.base)
        for key in sorted(params, key=lambda k: k.count(".")):  # a whole section first, then keys inside it
            _set(data, key, params[key])
        _set(data, "train.seed", seed)
        return data

    def trial_config(self, params: dict[str, Any], seed: int) -> RunConfig:
        """`trial_dict` parsed and checked; a ConfigError names the run-config field and the parameters."""
        try:
            return parse_run_config(self.trial_dict(params, seed))
        except ConfigError as exc:
            setting = ", ".join(f"{k}={v!r}" for k, v in params.items())
            raise ConfigError([(field, f"{message} (with {setting})") for field, message in exc.problems]) from None

    def space_hash(self) -> str:
        """12 hex characters over everything that decides the trials (the description and file name excluded)."""
        content = self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"description", "source"})
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------- loading
def is_study_spec(data: Any) -> bool:
    """Whether a parsed YAML file is a search space rather than a run config."""
    return isinstance(data, dict) and ("space" in data or "search" in data)


def load_study_spec(path: str | Path) -> StudySpec:
    """Read and validate a space file; relative paths in it are relative to the file."""
    path = Path(path).expanduser().resolve()
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        raise ConfigError([("space file", message) for _, message in exc.problems]) from None
    if not isinstance(data, dict):
        raise ConfigError.single("space file", f"{path} holds a {type(data).__name__}, not a mapping")
    return parse_study_spec(data, source=path)


def parse_study_spec(data: dict, *, source: Path | None = None) -> StudySpec:
    """Validate a search space given as a mapping; raises ConfigError listing the problems found."""
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
    if isinstance(data.get("space"), dict):
        for key, axis in data["space"].items():
            for kind in ("choice", "grid"):
                if isinstance(axis, dict) and isinstance(axis.get(kind), list):
                    axis[kind] = [_resolve_paths(value, str(key), folder) for value in axis[kind]]
    try:
        spec = StudySpec.model_validate({**data, "source": source})
    except ValidationError as exc:
        problems += [_problem(err) for err in exc.errors()]
    if problems:
        raise ConfigError(problems)
    _check_spec(spec)
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
    base = _resolve_paths(base, "", folder)
    try:
        _check_files(parse_run_config(base), {})
    except ConfigError as exc:
        return base, [(f"base.{field}" if field else "base", message) for field, message in exc.problems]
    return base, []


def _resolve_paths(value: Any, key: str, folder: Path) -> Any:
    """`value` (set at dotted `key`, "" for the whole config) with its relative file names made absolute."""
    value = copy.deepcopy(value)
    for field in _PATH_FIELDS:
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
    file = Path(name).expanduser()
    return str(file if file.is_absolute() else (folder / file).resolve())


def _problem(err: dict) -> tuple[str, str]:
    """A pydantic error of StudySpec as (field, message); an axis's inner location goes into the message."""
    loc = [str(part) for part in err["loc"]]
    cut = 2 if loc[:1] == ["space"] else len(loc)
    message = err["msg"].removeprefix("Value error, ")
    if loc[cut:]:
        message = f"{'.'.join(loc[cut:])}: {message}"
    if err["type"] not in ("missing", "extra_forbidden") and not isinstance(err.get("input"), dict):
        message += f" (got {err.get('input')!r})"
    return ".".join(loc[:cut]), message


def _set(data: dict, key: str, value: Any) -> None:
    """data[a][b][c] = value for key 'a.b.c', making missing sections; a whole section may be replaced."""
    *parents, leaf = key.split(".")
    node = data
    for depth, part in enumerate(parents):
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            section = ".".join(parents[: depth + 1])
            raise ConfigError.single(f"space.{key}", f"not a run-config field: {section!r} is a value, not a section")
        node = node[part]
    node[leaf] = copy.deepcopy(value)


def _get(tree: Any, key: str) -> Any:
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


# ---------------------------------------------------------------------- checks
def _check_spec(spec: StudySpec) -> None:
    """Checks that need the whole spec: each axis value applied to the base, the metric, the searcher."""
    teachers: dict[str, RunConfig] = {}
    problems = [p for key, axis in spec.space.items() if (p := _check_axis(spec, key, axis, teachers))]
    if problems:
        raise ConfigError(problems)
    # What decides the reported metrics: the eval section and the objective, of the base and of each swept value.
    configs = [parse_run_config(spec.base)]
    for key in spec.space:
        if key.split(".")[0] in ("eval", "objective"):
            configs += [parse_run_config(data) for data, _ in _variants(spec, key)]
    evals, objectives = [c.eval for c in configs], {c.objective.name for c in configs}
    problems += _check_metrics(spec, evals, objectives)
    algorithm = spec.search.algorithm
    for key, axis in spec.space.items():
        if axis.kind == "grid" and algorithm != "grid":
            # Optuna (TPE, NSGA-II, random) samples: a grid axis would silently become a choice.
            problems.append(
                (f"space.{key}", f"{algorithm} samples, it cannot enumerate a grid: use choice, or algorithm grid")
            )
        if algorithm == "grid" and not axis.discrete:
            problems.append((f"space.{key}", f"algorithm grid enumerates values: a {axis.kind} range has none"))
    if spec.search.scheduler.name == "asha" and any(e.interval == 0 for e in evals):
        problems.append(
            ("search.scheduler", "asha stops trials at evaluations: set the base's eval.interval > 0 (steps)")
        )
    if not problems:
        problems += _check_combinations(spec)
    if problems:
        raise ConfigError(problems)


def _variants(spec: StudySpec, key: str) -> Iterator[tuple[dict, tuple[dict[str, Any], Any]]]:
    """The base with each value of `key` (both ends of a range), under every value of the axes enclosing it (a swept
    `objective` for `objective.tau`); with the (enclosing setting, value) that made it."""
    keys = sorted((k for k in spec.space if key.startswith(k + ".")), key=lambda k: k.count("."))
    for values in itertools.product(*(spec.space[k].values for k in keys), spec.space[key].values):
        data = copy.deepcopy(spec.base)
        for other, value in zip([*keys, key], values, strict=True):
            _set(data, other, value)
        yield data, (dict(zip(keys, values[:-1], strict=True)), values[-1])


def _check_axis(spec: StudySpec, key: str, axis: Axis, teachers: dict[str, RunConfig]) -> tuple[str, str] | None:
    """The first problem of applying each value (both ends of a range) of `axis` to the base, as space.<key>;
    under every value of an enclosing axis, so that no trial meets a key its section does not have."""
    if key == "train.seed":
        return f"space.{key}", "the seed is set by `seeds`, not swept"
    if key == "resources" or key.startswith("resources."):
        # Tune reserves one trial size (and one executor) for the whole sweep, from the base.
        return f"space.{key}", "resources cannot be swept: every trial of a sweep runs with the base's resources"
    try:
        variants = list(_variants(spec, key))
    except ConfigError as exc:  # the key runs through a value (`train.steps.x`)
        return exc.problems[0]
    for data, (setting, value) in variants:
        where = "".join(f" with {other}={other_value!r}" for other, other_value in setting.items())
        try:
            config = parse_run_config(data)
            _check_files(config, teachers)
        except ConfigError as exc:
            field, message = exc.problems[0]
            # pydantic's message for a key its model does not have, at the key or at a section above it
            if message == "Extra inputs are not permitted" and (field == key or key.startswith(field + ".")):
                return f"space.{key}", f"not a run-config field{where or ' of this base'}: {field!r} is not accepted"
            return f"space.{key}", f"value {value!r}{where}: {field}: {message}"
        parsed = _get(config.model_dump(), key)
        if axis.kind in ("uniform", "loguniform") and isinstance(parsed, int) and not isinstance(parsed, bool):
            return f"space.{key}", f"an integer field: sample it with int: [low, high] (got {axis.kind})"
    return None


def _check_files(config: RunConfig, teachers: dict[str, RunConfig]) -> None:
    """Named files exist, and a config teacher is an si run on the same interpolant (teachers.check_compatible)."""
    teacher = getattr(config.objective, "teacher", None)
    for field in _PATH_FIELDS:
        section, _, leaf = field.rpartition(".")
        name = getattr(teacher if section == "objective.teacher" else config.data, leaf, None)
        if name is not None and not Path(name).is_file():
            raise ConfigError.single(field, f"no file {name!r}")
    if teacher is not None and teacher.config is not None:
        if teacher.config not in teachers:
            try:
                teachers[teacher.config] = load_run_config(teacher.config)
            except ConfigError as exc:
                raise ConfigError.single("objective.teacher.config", f"{teacher.config}: {exc}") from None
        check_compatible(teachers[teacher.config], config.interpolant)


def _check_metrics(spec: StudySpec, evals: list, objectives: set[str]) -> list[tuple[str, str]]:
    metrics = sorted({m for e in evals for m in e.metrics})
    steps = sorted({k for e in evals for k in e.steps})
    problems = []
    for name in spec.metric:
        match = _METRIC.match(name)
        if name == "loss" or (name == "mgm/divergence" and "mgm" in objectives):
            continue
        if match and match["metric"] in metrics and int(match["steps"]) in steps:
            continue
        problems.append(
            (
                "metric",
                f"{name!r} is not reported by these trials: use loss, mgm/divergence (objective mgm) or "
                f"<metric>/nfe-<K> with metric in {metrics} (eval.metrics) and K in {steps} (eval.steps)",
            )
        )
    return problems


def _check_combinations(spec: StudySpec) -> list[tuple[str, str]]:
    """Every combination of an all-discrete space that is small enough, applied together (axes can clash)."""
    if not all(axis.discrete for axis in spec.space.values()):
        return []
    keys = list(spec.space)
    if math.prod(len(spec.space[k].values) for k in keys) > _MAX_COMBINATIONS:
        return []
    for values in itertools.product(*(spec.space[k].values for k in keys)):
        params = dict(zip(keys, values, strict=True))
        try:
            spec.trial_config(params, spec.seeds[0])
        except ConfigError as exc:
            field, message = exc.problems[0]
            related = [k for k in keys if field == k or field.startswith(k + ".") or k.startswith(field + ".")]
            return [(f"space.{related[0]}" if related else "space", f"{field}: {message}")]
    return []


__all__ = [
    "Axis",
    "AxisKind",
    "SchedulerSpec",
    "SearchSpec",
    "StudySpec",
    "is_study_spec",
    "load_study_spec",
    "parse_study_spec",
]
