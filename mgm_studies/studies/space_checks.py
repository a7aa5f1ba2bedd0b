"""The checks of a search space that need the whole spec: each axis value applied to the base, and the metric.

`check_spec` applies every value of every axis (each choice, both ends of a range), under every value of the axes
enclosing it, to the base and validates the run config that results (`check_files`: named files exist, a config
teacher fits); it checks that the metric is one the trials report, that the searcher can sample or enumerate each
axis, that asha has evaluations to stop at, and (for a small all-discrete space) every combination of values together.
Every problem is a `ConfigError` naming `space.<dotted key>`, `metric` or `search.<field>`.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mgm_studies.config import EvalConfig, RunConfig, load_run_config, parse_run_config
from mgm_studies.configbase import ConfigError, quote
from mgm_studies.loading import PATH_FIELDS
from mgm_studies.names import AREA_PREFIX, LOSS, SEED, parse_eval_metric
from mgm_studies.objectives import OBJECTIVES
from mgm_studies.studies.space_spec import Axis, StudySpec, set_dotted
from mgm_studies.teachers import check_compatible, requirements

_MAX_COMBINATIONS = 512  # an all-discrete space up to this size has every combination checked


def check_spec(spec: StudySpec) -> None:
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
    problems += [("metric", problem) for name in spec.metric if (problem := _metric_problem(name, evals, objectives))]
    problems += _check_claims(spec, evals, objectives)
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
            set_dotted(data, other, value)
        yield data, (dict(zip(keys, values[:-1], strict=True)), values[-1])


def _check_axis(spec: StudySpec, key: str, axis: Axis, teachers: dict[str, RunConfig]) -> tuple[str, str] | None:
    """The first problem of applying each value (both ends of a range) of `axis` to the base, as space.<key>;
    under every value of an enclosing axis, so that no trial meets a key its section does not have."""
    if key == SEED:
        return f"space.{key}", "the seed is set by `seeds`, not swept"
    if key == "resources" or key.startswith("resources."):
        # Tune reserves one trial size (and one executor) for the whole sweep, from the base.
        return f"space.{key}", "resources cannot be swept: every trial of a sweep runs with the base's resources"
    try:
        variants = list(_variants(spec, key))
    except ConfigError as exc:  # the key runs through a value (`train.steps.x`)
        return exc.problems[0]
    for data, (setting, value) in variants:
        where = "".join(f" with {other}={quote(other_value)}" for other, other_value in setting.items())
        try:
            config = parse_run_config(data)
            check_files(config, teachers)
        except ConfigError as exc:
            field, message = exc.problems[0]
            # pydantic's message for a key its model does not have, at the key or at a section above it
            if message == "Extra inputs are not permitted" and (field == key or key.startswith(field + ".")):
                return f"space.{key}", f"not a run-config field{where or ' of this base'}: {no_such_field(data, field)}"
            return f"space.{key}", f"value {quote(value)}{where}: {field}: {message}"
        parsed = get_dotted(config.model_dump(), key)
        if axis.kind in ("uniform", "loguniform") and isinstance(parsed, int) and not isinstance(parsed, bool):
            return f"space.{key}", f"an integer field: sample it with int: [low, high] (got {axis.kind})"
    return None


def check_files(config: RunConfig, teachers: dict[str, RunConfig]) -> None:
    """Named files exist, and a config teacher is an si run on the same interpolant (teachers.check_compatible)."""
    teacher = getattr(config.objective, "teacher", None)
    for field in PATH_FIELDS:
        name = config
        for part in field.split("."):
            name = getattr(name, part, None)
        if name is not None and not Path(name).is_file():
            raise ConfigError.single(field, f"no file {name!r}")
    if teacher is not None and teacher.config is not None:
        if teacher.config not in teachers:
            try:
                teachers[teacher.config] = load_run_config(teacher.config)
            except ConfigError as exc:
                raise ConfigError.single("objective.teacher.config", f"{teacher.config}: {exc}") from None
        check_compatible(teachers[teacher.config], *requirements(config))


def objective_metrics() -> dict[str, str]:
    """{metric: objective} of what the registered objectives declare they report beside `loss` and the evaluation's
    metrics (an objective class's `reported_metrics`, e.g. mgm's `mgm/divergence`): what a study may optimise, and
    what the sweep logs from a trial's results."""
    return {m: name for name, entry in OBJECTIVES.items() for m in entry.objective.reported_metrics}


def _metric_problem(name: str, evals: list[EvalConfig], objectives: set[str]) -> str | None:
    """Why `name` is not a metric the trials report (None if it is): loss, one its objective declares (mgm/divergence)
    or <metric>/nfe-<K> with the metric in some eval.metrics and K in some eval.steps, or its convergence summary
    area_<metric>/nfe-<K> (the trainer's normalised area under the metric-versus-step curve)."""
    metrics = sorted({m for e in evals for m in e.metrics})
    steps = sorted({k for e in evals for k in e.steps})
    parsed, declared = parse_eval_metric(name), objective_metrics()
    if name == LOSS or declared.get(name) in objectives:
        return None
    if parsed and parsed[0].removeprefix(AREA_PREFIX) in metrics and parsed[1] in steps:
        return None
    named = "".join(f", {metric} (objective {objective})" for metric, objective in declared.items())
    return (
        f"{name!r} is not reported by these trials: use {LOSS}{named} or "
        f"<metric>/nfe-<K> (or area_<metric>/nfe-<K>, its convergence speed) with metric in {metrics} "
        f"(eval.metrics) and K in {steps} (eval.steps)"
    )


def _check_claims(spec: StudySpec, evals: list[EvalConfig], objectives: set[str]) -> list[tuple[str, str]]:
    """Each claim names a discrete axis of the space, values of it (as labels: a named section by its name), and a
    metric the trials report."""
    problems = []
    for i, claim in enumerate(spec.claims):
        where = f"claims[{i}]"
        axis = spec.space.get(claim.axis)
        if axis is None or not axis.discrete:
            discrete = [k for k, a in spec.space.items() if a.discrete]
            problems.append((f"{where}.axis", f"{claim.axis!r} is not a grid or choice axis of this space: {discrete}"))
            continue
        labels = axis.labels()
        for field, values in (("best", [claim.best]), ("against", claim.against or [])):
            for value in values:
                if not any(value == label for label in labels):
                    problems.append((f"{where}.{field}", f"{value!r} is not a value of {claim.axis}: {labels}"))
        for key, value in claim.where.items():
            held = spec.space.get(key)
            if key == claim.axis or held is None or not held.discrete:
                problems.append((f"{where}.where", f"{key!r} is not another grid or choice axis of this space"))
            elif not any(value == label for label in held.labels()):
                problems.append((f"{where}.where", f"{value!r} is not a value of {key}: {held.labels()}"))
        if claim.against is not None and any(value == claim.best for value in claim.against):
            problems.append((f"{where}.against", f"names the claimed best value {claim.best!r} itself"))
        if (problem := _metric_problem(claim.metric, evals, objectives)) is not None:
            problems.append((f"{where}.metric", problem))
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


def no_such_field(data: dict, field: str) -> str:
    """Why the run config `data` refuses the dotted `field`: the fields its section has; for a union section (data,
    model, objective) the member its `name` chose, since a field of another member comes with that whole section."""
    section, _, leaf = field.rpartition(".")
    trimmed = copy.deepcopy(data)
    node = get_dotted(trimmed, section) if section else None
    try:
        node.pop(leaf)  # the config without the refused field tells which model its section is
        model: Any = parse_run_config(trimmed)
        for part in section.split("."):
            model = getattr(model, part)
        fields = ", ".join(type(model).model_fields)
    except (AttributeError, KeyError, ConfigError):  # no such section, or the config is invalid without it too
        return f"{field!r} is not accepted"
    if not isinstance(name := getattr(model, "name", None), str):
        return f"{section} has no field {leaf!r} (its fields: {fields})"
    return (
        f"{section} {name!r} has no field {leaf!r} (its fields: {fields}); to choose another {section}, give the "
        f"whole `{section}` section with its name"
    )


def get_dotted(tree: Any, key: str) -> Any:
    """tree[a][b][c] for key 'a.b.c', None where a section is missing."""
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree
