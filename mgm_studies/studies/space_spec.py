"""The pydantic models of a search-space file (`Axis`, `SchedulerSpec`, `SearchSpec`, `ClaimSpec`, `StudySpec`), each
checking its own fields (one distribution per axis, low < high, one mode per metric, unique seeds ...). A `StudySpec`
turns one assignment of its axes into a trial's run config (`trial_dict`, `trial_config`). Over 300 lines: the
schema of one file, each validator beside the fields it checks.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, Strict, ValidationInfo, field_validator, model_validator

from mgm_studies.config import RunConfig, parse_run_config
from mgm_studies.configbase import ConfigError, PositiveInt, Seed, StrictModel, quote
from mgm_studies.names import SEED, name_problem

AxisKind = Literal["choice", "grid", "uniform", "loguniform", "int"]
Label = str | int | float | bool | None
MAX_SEEDS = 1000  # repeats of each configuration: a typo such as `seeds: 1e9` is refused, not expanded
_KINDS: tuple[AxisKind, ...] = ("choice", "grid", "uniform", "loguniform", "int")


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
                raise ValueError(f"{kind} values must be unique, got {quote(values)}")
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

    def display_names(self) -> dict[str, str]:
        """{option-i: a readable name} for the labels that only say a position (see `labels`): the fields in which
        this axis's values differ, a string as itself and anything else as key=value (e.g. `s_plus_tau clamp
        tau=0.2`); {} when there are none, or when the names would not tell the values apart."""
        if not self.discrete:
            return {}
        labels = self.labels()
        if not any(isinstance(label, str) and label.startswith("option-") for label in labels):
            return {}
        flat = [_flat(value) for value in self.values]
        differing = [k for k in dict.fromkeys(k for f in flat for k in f) if len({repr(f.get(k)) for f in flat}) > 1]
        differing.sort(key=lambda k: k.rsplit(".", 1)[-1] != "name")  # a section's name first, then in file order
        names = [
            " ".join(
                str(f[k]) if isinstance(f[k], str) else f"{k.rsplit('.', 1)[-1]}={f[k]}" for k in differing if k in f
            )
            for f in flat
        ]
        if len(set(names)) != len(names):
            return {}
        return {label: name for label, name in zip(labels, names, strict=True) if label != name}

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


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A value as {dotted key: leaf}; a non-mapping as {"value": it}."""
    if not isinstance(value, dict):
        return {prefix.rstrip(".") or "value": value}
    out: dict[str, Any] = {}
    for key, inner in value.items():
        out.update(_flat(inner, f"{prefix}{key}.") if isinstance(inner, dict) else {f"{prefix}{key}": inner})
    return out


class SchedulerSpec(StrictModel):
    """`fifo` runs every trial to the end; `asha` stops the worse ones at evaluations (`grace_period` of them). A bare
    name (`scheduler: asha`) is that scheduler with its defaults, as `{name: asha}`."""

    name: Literal["fifo", "asha"] = "fifo"
    grace_period: PositiveInt = 1
    reduction_factor: float = Field(2.0, gt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class SearchSpec(StrictModel):
    """`num_samples`: configurations drawn by optuna / random (default 8); for `grid`, repeats of the grid
    (default 1). `optuna-nsga2` takes one metric or several."""

    algorithm: Literal["optuna", "optuna-nsga2", "random", "grid"] = "optuna"
    num_samples: PositiveInt = 8
    max_concurrent: PositiveInt | None = None
    seed: Seed = 0
    scheduler: SchedulerSpec = SchedulerSpec()

    @model_validator(mode="before")
    @classmethod
    def _grid_runs_once(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("algorithm") == "grid" and "num_samples" not in data:
            return {**data, "num_samples": 1}
        return data


class ClaimSpec(StrictModel):
    """A statement the study tests, read by the report's Claims section: along `axis`, the value `best` does better
    on `metric` than each value in `against` (default: every other value of the axis), the other axes marginalised
    or held at the values in `where` (`relation: better`), or at least no worse (`not_worse`). Values are given as
    in the space (a named section by its name). The claim changes nothing the trials train: it is not part of the
    space hash, and `sweep --resume` records the space's current claims."""

    statement: str = Field(min_length=1)
    axis: str
    best: Any
    metric: str
    against: list[Any] | None = None
    relation: Literal["better", "not_worse"] = "better"
    where: dict[str, Any] = Field(default_factory=dict)  # other axes held at these values (default: marginalised)


class StudySpec(StrictModel):
    """A validated search space. `base` is a plain dict whose file paths are absolute; `space` maps dotted run-config
    keys to axes; `metric` and `mode` are lists of one length; `source` is the space file (None: built from a dict)."""

    name: str  # the MLflow experiment and the report folder: checked against `names.NAME_PATTERN`
    description: str | None = None
    base: dict[str, Any]
    metric: list[str] = Field(min_length=1)
    mode: list[Literal["min", "max"]]  # one mode in the file applies to every metric (default min)
    search: SearchSpec = SearchSpec()
    space: dict[str, Axis] = Field(min_length=1)
    seeds: list[Seed] = Field(default_factory=lambda: [0], max_length=MAX_SEEDS)
    claims: list[ClaimSpec] = Field(default_factory=list)
    source: Path | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("metric", mode="before")
    @classmethod
    def _one_metric(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= MAX_SEEDS:
                raise ValueError(f"a number of seeds is in [1, {MAX_SEEDS}], got {quote(value)}")
            return list(range(value))
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value) or min(value) < 0:
            raise ValueError(f"seeds are a non-empty list of unique integers >= 0, got {quote(value)}")
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
        if unknown := sorted(set(params) - set(self.space)):
            raise ConfigError.single("space", f"parameters {unknown} are not axes of this space ({sorted(self.space)})")
        data = copy.deepcopy(self.base)
        for key in sorted(params, key=lambda k: k.count(".")):  # a whole section first, then keys inside it
            set_dotted(data, key, params[key])
        set_dotted(data, SEED, seed)
        return data

    def trial_config(self, params: dict[str, Any], seed: int) -> RunConfig:
        """`trial_dict` parsed and checked; a ConfigError names the run-config field and the parameters."""
        try:
            return parse_run_config(self.trial_dict(params, seed))
        except ConfigError as exc:
            setting = ", ".join(f"{k}={quote(v)}" for k, v in params.items())
            raise ConfigError([(field, f"{message} (with {setting})") for field, message in exc.problems]) from None

    def space_hash(self) -> str:
        """12 hex characters over everything that decides what the trials train: the description, the claims, the
        file name and the base's `resources` (where trials run: the same study on a GPU cluster is the same study,
        and `sweep --resume` finds it) are left out."""
        content = self.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude={"description", "source", "claims"}
        )
        content["base"].pop("resources", None)
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


def set_dotted(data: dict, key: str, value: Any) -> None:
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
