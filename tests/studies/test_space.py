"""Search spaces: what a space file means (labels, trial configs, paths, hash) and every way it is refused."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mgm_studies.configbase import ConfigError
from mgm_studies.studies.overrides import sweep_overrides
from mgm_studies.studies.space import Axis, is_study_spec, load_study_spec, parse_study_spec

ROOT = Path(__file__).resolve().parents[2]
SI_TEACHER = str(ROOT / "configs" / "checkerboard_si.yaml")
SHIPPED = sorted([*(ROOT / "search_spaces").glob("*.yaml"), *(ROOT / "search_spaces" / "claims").glob("*.yaml")])


def _base(**sections) -> dict:
    base = {
        "data": {"name": "checkerboard"},
        "model": {"hidden": 32, "depth": 2, "embedding_dim": 16},
        "objective": {"name": "si"},
        "train": {"steps": 40, "batch_size": 64, "ema_decays": [0.9, 0.99]},
        "eval": {"metrics": ["kl", "sw2"], "steps": [1, 4], "num_samples": 500, "interval": 20},
    }
    base.update(sections)
    return base


ITVM = {"name": "itvm", "teacher": {"config": SI_TEACHER}, "tau": 0.1}
PFMM = {"name": "pfmm", "reference": "ema", "tau": 0.1}
MGM = {"name": "mgm", "flip_probability": 0.5, "t_min": 0.05, "t_max": 0.5}


def _spec(space: dict, **fields) -> dict:
    return {"name": "study", "base": _base(), "metric": "kl/nfe-1", "space": space, **fields}


def _refused(data: dict, **kwargs) -> tuple[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_study_spec(data, **kwargs)
    return info.value.problems[0]


# ---------------------------------------------------------------------- shipped spaces
def test_the_five_studies_ship() -> None:
    names = {path.stem for path in SHIPPED}
    assert {"demo", "si_schedules", "mgm_flip", "itvm_intermediate_time", "flow_map_objectives"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_space_is_valid_and_makes_trial_configs(path: Path) -> None:
    spec = load_study_spec(path)
    assert spec.source == path and spec.name
    assert path.read_text().startswith("#"), "each shipped space opens with a comment saying what it answers"
    config = spec.trial_config(spec.default_params(), spec.seeds[-1])
    assert config.train.seed == spec.seeds[-1]
    teacher = getattr(config.objective, "teacher", None)
    if teacher is not None and teacher.config is not None:
        assert Path(teacher.config).is_absolute() and Path(teacher.config).is_file()


def test_demo_is_small_and_uses_the_small_shared_teacher() -> None:
    spec = load_study_spec(ROOT / "search_spaces" / "demo.yaml")
    assert spec.search.algorithm == "grid" and spec.search.num_samples == 1 and spec.search.max_concurrent == 2
    trials = [(value, seed) for value in spec.space["objective.intermediate_time"].values for seed in spec.seeds]
    assert len(trials) == 6
    teachers = set()
    for value, seed in trials:
        config = spec.trial_config({"objective.intermediate_time": value}, seed)
        assert config.objective.intermediate_time == value
        assert config.train.num_steps <= 1500 and config.model.hidden == 128
        teachers.add(config.objective.teacher.config)
    assert teachers == {str(ROOT / "search_spaces" / "teachers" / "checkerboard_si_small.yaml")}


# ---------------------------------------------------------------------- meaning
def test_shorthands_metric_mode_seeds_and_grid_repeats() -> None:
    spec = parse_study_spec(_spec({"objective.time_law.t_eps": {"uniform": [0.0, 0.1]}}, seeds=3))
    assert spec.metric == ["kl/nfe-1"] and spec.mode == ["min"] and spec.seeds == [0, 1, 2]
    assert spec.search.algorithm == "optuna" and spec.search.num_samples == 8 and not spec.multi_objective
    spec = parse_study_spec(
        _spec({"train.batch_size": {"grid": [32, 64]}}, metric=["kl/nfe-1", "sw2/nfe-4"], mode="max")
        | {"search": {"algorithm": "grid"}}
    )
    assert spec.mode == ["max", "max"] and spec.multi_objective and spec.search.num_samples == 1


def test_default_params_are_a_valid_point_of_every_axis_kind() -> None:
    spec = parse_study_spec(
        _spec(
            {
                "train.batch_size": {"int": [32, 97]},
                "train.optimizer.lr": {"loguniform": [1e-4, 1e-2]},
                "objective.time_law.t_eps": {"uniform": [0.0, 0.1]},
                "train.ema_decays": {"choice": [[0.9], [0.9, 0.99]]},
            }
        )
    )
    params = spec.default_params()
    assert params["train.batch_size"] == 64 and params["train.optimizer.lr"] == pytest.approx(1e-3)
    assert params["objective.time_law.t_eps"] == pytest.approx(0.05) and params["train.ema_decays"] == [0.9]
    config = spec.trial_config(params, 0)
    assert config.train.batch_size == 64 and config.train.optimizer.lr == pytest.approx(1e-3)


def test_trial_config_replaces_a_section_then_sets_keys_inside_it_and_the_seed() -> None:
    spec = parse_study_spec(_spec({"objective": {"choice": [PFMM, ITVM]}, "objective.tau": {"uniform": [0.05, 0.3]}}))
    config = spec.trial_config({"objective.tau": 0.2, "objective": ITVM}, seed=7)
    assert config.objective.name == "itvm" and config.objective.tau == 0.2 and config.train.seed == 7
    assert config.train.steps == 40 and spec.base["objective"] == {"name": "si"}  # the base is left alone
    with pytest.raises(ConfigError) as info:
        spec.trial_config({"train.steps": 3}, 0)
    assert info.value.problems[0][0] == "space" and "not axes of this space" in info.value.problems[0][1]


def test_trial_config_names_the_field_of_an_invalid_combination() -> None:
    # Each end of each range is valid with the base; the two ranges overlap, so a searcher can draw t_min > t_max.
    space = {"objective.t_min": {"uniform": [0.05, 0.4]}, "objective.t_max": {"uniform": [0.1, 0.5]}}
    spec = parse_study_spec(_spec(space) | {"base": _base(objective=MGM)})
    with pytest.raises(ConfigError) as info:
        spec.trial_config({"objective.t_min": 0.4, "objective.t_max": 0.1}, 0)
    field, message = info.value.problems[0]
    assert field == "objective" and "must be <= t_max" in message
    assert "objective.t_min=0.4, objective.t_max=0.1" in message


def test_labels_round_trip_through_value_for() -> None:
    lmd = {"name": "lmd", "teacher": {"config": SI_TEACHER}}
    named = Axis.model_validate({"choice": [{"name": "lsd"}, lmd]})
    assert named.labels() == ["lsd", "lmd"] and named.value_for("lmd") == lmd
    named.value_for("lmd")["teacher"]["config"] = "elsewhere"  # a copy: the axis keeps its value
    assert named.values[1] == lmd
    same_names = Axis.model_validate({"grid": [{"name": "itvm", "tau": 0.1}, {"name": "itvm", "tau": 0.2}]})
    assert same_names.labels() == ["option-0", "option-1"] and same_names.value_for("option-1")["tau"] == 0.2
    mixed = Axis.model_validate({"choice": ["lsd", {"name": "lsd"}, None, 3, [1, 2]]})
    assert mixed.labels() == ["lsd", "option-1", None, 3, "[1, 2]"]
    assert [mixed.value_for(label) for label in mixed.labels()] == mixed.values
    assert Axis.model_validate({"choice": [1, True]}).value_for(True) is True
    with pytest.raises(KeyError):
        named.value_for("emd")


def test_axis_kinds_and_int_alias() -> None:
    axis = Axis.model_validate(yaml.safe_load("{int: [128, 512]}"))
    assert axis.kind == "int" and axis.values == [128, 512] and axis.default() == 320
    assert Axis(int_=(1, 2)).kind == "int" and Axis(loguniform=(0.01, 1)).default() == pytest.approx(0.1)


def test_relative_paths_resolve_against_the_file_that_names_them(tmp_path: Path) -> None:
    (tmp_path / "teachers").mkdir()
    teacher = tmp_path / "teachers" / "si.yaml"
    teacher.write_text(Path(SI_TEACHER).read_text())
    inline = {**_base(objective={**ITVM, "teacher": {"config": "teachers/si.yaml"}})}
    space = {"objective": {"choice": [{"name": "lmd", "teacher": {"config": "teachers/si.yaml"}}, {"name": "lsd"}]}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(_spec(space) | {"base": inline}))
    spec = load_study_spec(tmp_path / "space.yaml")
    assert spec.base["objective"]["teacher"]["config"] == str(teacher)
    assert spec.space["objective"].value_for("lmd")["teacher"]["config"] == str(teacher)
    # A base named by file: its own relative paths are relative to it (configs/), not to the space file.
    (tmp_path / "by_file.yaml").write_text(
        yaml.safe_dump(
            _spec({"objective.tau": {"choice": [0.1]}}) | {"base": str(ROOT / "configs/checkerboard_itvm.yaml")}
        )
    )
    assert load_study_spec(tmp_path / "by_file.yaml").base["objective"]["teacher"]["config"] == SI_TEACHER


def test_space_hash_is_stable_across_key_order_and_follows_the_values() -> None:
    data = _spec({"train.batch_size": {"choice": [32, 64]}, "train.optimizer.lr": {"loguniform": [1e-4, 1e-2]}})
    reordered = {key: data[key] for key in reversed(list(data))}
    reordered["space"] = {key: data["space"][key] for key in reversed(list(data["space"]))}
    reordered["base"] = {key: data["base"][key] for key in reversed(list(data["base"]))}
    first = parse_study_spec(data).space_hash()
    assert len(first) == 12 and first == parse_study_spec(reordered).space_hash()
    assert parse_study_spec(data | {"description": "words"}).space_hash() == first
    changed = copy.deepcopy(data)
    changed["space"]["train.batch_size"]["choice"] = [32, 128]
    assert parse_study_spec(changed).space_hash() != first
    assert parse_study_spec(data | {"seeds": [0, 1]}).space_hash() != first
    # Where trials run is not what they train: the base's resources leave the hash alone (issue 15).
    on_gpus = data | {"base": {**data["base"], "resources": {"gpus_per_worker": 0.25, "device": "cuda"}}}
    assert parse_study_spec(on_gpus).space_hash() == first


def test_is_study_spec_tells_spaces_from_run_configs() -> None:
    assert is_study_spec(_spec({})) and is_study_spec({"search": {}})
    assert not is_study_spec(_base()) and not is_study_spec([1])


# ---------------------------------------------------------------------- refusals
REFUSALS = {
    "unknown key": (_spec({"objective.taux": {"choice": [0.1]}}), "space.objective.taux", "not a run-config field"),
    "resources": (_spec({"resources.workers": {"choice": [1, 2]}}), "space.resources.workers", "cannot be swept"),
    "unknown section": (_spec({"optimiser.lr": {"uniform": [0.1, 0.2]}}), "space.optimiser.lr", "not a run-config"),
    "key below a value": (_spec({"train.steps.x": {"choice": [1]}}), "space.train.steps.x", "not a section"),
    "field of another objective": (_spec({"objective.tau": {"choice": [0.1]}}), "space.objective.tau", "run-config"),
    "field of one swept objective only": (
        _spec({"objective": {"choice": [ITVM, {"name": "si"}]}, "objective.tau": {"choice": [0.1]}}),
        "space.objective.tau",
        "not a run-config field with objective={'name': 'si'}",
    ),
    "float range on an int field": (
        _spec({"train.batch_size": {"uniform": [128.0, 512.0]}}),
        "space.train.batch_size",
        "sample it with int",
    ),
    "wrong value type": (_spec({"train.steps": {"choice": ["abc"]}}), "space.train.steps", "valid integer"),
    "empty choice": (_spec({"train.steps": {"choice": []}}), "space.train.steps", "at least one value"),
    "duplicate choice": (_spec({"train.steps": {"grid": [5, 5]}}), "space.train.steps", "unique"),
    "no distribution": (_spec({"train.steps": {}}), "space.train.steps", "exactly one distribution"),
    "two distributions": (
        _spec({"train.steps": {"choice": [1], "int": [1, 2]}}),
        "space.train.steps",
        "(got choice, int)",
    ),
    "unknown distribution": (_spec({"train.steps": {"normal": [1, 2]}}), "space.train.steps", "normal"),
    "low >= high": (
        _spec({"objective.time_law.t_eps": {"uniform": [0.3, 0.1]}}),
        "space.objective.time_law.t_eps",
        "low < high",
    ),
    "loguniform from 0": (_spec({"train.optimizer.lr": {"loguniform": [0, 1]}}), "space.train.optimizer.lr", "> 0"),
    "int of non-integers": (_spec({"train.batch_size": {"int": [1.5, 4]}}), "space.train.batch_size", "integer"),
    "range past the legal end": (
        _spec({"objective.flip_probability": {"uniform": [0.2, 1.5]}}) | {"base": _base(objective=MGM)},
        "space.objective.flip_probability",
        "less than or equal to 1",
    ),
    "asymmetric schedule for mgm": (
        _spec({"interpolant.schedule": {"choice": ["linear", "vp"]}}) | {"base": _base(objective=MGM)},
        "space.interpolant.schedule",
        "needs a symmetric interpolant",
    ),
    "teacher on another interpolant": (
        _spec({"interpolant.schedule": {"choice": ["linear", "trig"]}}) | {"base": _base(objective=ITVM)},
        "space.interpolant.schedule",
        "differs from the student's",
    ),
    "missing teacher file": (
        _spec({"objective": {"choice": [{"name": "lmd", "teacher": {"config": "/nonexistent/si.yaml"}}]}}),
        "space.objective",
        "no file",
    ),
    "seed swept": (_spec({"train.seed": {"choice": [1, 2]}}), "space.train.seed", "seeds"),
    "clashing combination": (
        _spec(
            {"eval.ema": {"grid": [0.9, 0.99]}, "train.ema_decays": {"grid": [[0.9], [0.99]]}},
            search={"algorithm": "grid"},
        ),
        "space.eval.ema",
        "not one of the tracked",
    ),
    "metric off the ladder": (_spec({"train.steps": {"choice": [5]}}, metric="kl/nfe-3"), "metric", "K in [1, 4]"),
    "metric not evaluated": (_spec({"train.steps": {"choice": [5]}}, metric="mmd/nfe-1"), "metric", "eval.metrics"),
    "divergence without mgm": (_spec({"train.steps": {"choice": [5]}}, metric="mgm/divergence"), "metric", "mgm"),
    "modes and metrics": (
        _spec({"train.steps": {"choice": [5]}}, metric=["kl/nfe-1", "loss"], mode=["min"]),
        "mode",
        "one per metric",
    ),
    "asha without evaluations": (
        _spec({"train.steps": {"choice": [5]}}, search={"scheduler": {"name": "asha"}})
        | {"base": _base(eval={"steps": [1], "interval": 0})},
        "search.scheduler",
        "eval.interval > 0",
    ),
    "grid under optuna": (_spec({"train.steps": {"grid": [5, 6]}}), "space.train.steps", "use choice, or algorithm"),
    "range under grid": (
        _spec({"train.steps": {"int": [5, 6]}}, search={"algorithm": "grid"}),
        "space.train.steps",
        "enumerates values",
    ),
    "unknown algorithm": (
        _spec({"train.steps": {"int": [5, 6]}}, search={"algorithm": "tpe"}),
        "search.algorithm",
        "'optuna'",
    ),
    "no seeds": (_spec({"train.steps": {"int": [5, 6]}}, seeds=[]), "seeds", "non-empty"),
    "repeated seeds": (_spec({"train.steps": {"int": [5, 6]}}, seeds=[1, 1]), "seeds", "unique"),
    "bad name": (_spec({"train.steps": {"int": [5, 6]}}, name="my study"), "name", "pattern"),
    "no axes": (_spec({}), "space", "at least 1"),
    "invalid base": (
        _spec({"train.steps": {"int": [5, 6]}}) | {"base": _base(train={"batch_size": 8})},
        "base.train",
        "give the training length",
    ),
    "missing base file": (_spec({"train.steps": {"int": [5, 6]}}) | {"base": "/nonexistent.yaml"}, "base", "exist"),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_refused_with_the_field_named(case: str) -> None:
    data, field, fragment = REFUSALS[case]
    got_field, message = _refused(copy.deepcopy(data))
    assert got_field == field, message
    assert fragment in message


def test_an_axis_inside_a_swept_section_is_checked_against_that_section() -> None:
    # objective.tau is not a field of the base's si objective, but it is of the swept itvm section that precedes it.
    spec = parse_study_spec(
        _spec({"objective": {"grid": [ITVM]}, "objective.tau": {"grid": [0.1, 0.2]}}, search={"algorithm": "grid"})
    )
    assert spec.trial_config(spec.default_params(), 0).objective.tau == 0.1


def test_metrics_of_swept_eval_steps_are_accepted() -> None:
    spec = parse_study_spec(_spec({"eval.steps": {"choice": [[1, 2], [1, 8]]}}, metric="kl/nfe-8"))
    assert spec.metric == ["kl/nfe-8"]


def test_space_file_problems_name_the_space_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_study_spec(tmp_path / "missing.yaml")
    assert info.value.problems[0][0] == "space file" and "does not exist" in info.value.problems[0][1]
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError) as info:
        load_study_spec(tmp_path / "list.yaml")
    assert info.value.problems[0][0] == "space file" and "not a mapping" in info.value.problems[0][1]
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_study_spec(tmp_path / "broken.yaml")
    assert info.value.problems[0][0] == "space file" and "not valid YAML" in info.value.problems[0][1]


def test_claims_name_a_discrete_axis_its_values_and_a_reported_metric_and_leave_the_hash_alone() -> None:
    space = {"interpolant.schedule": {"choice": ["linear", "trig"]}, "train.optimizer.lr": {"loguniform": [1e-4, 1e-2]}}
    claim = {"statement": "linear beats trig", "axis": "interpolant.schedule", "best": "linear", "metric": "kl/nfe-1"}
    plain = parse_study_spec(_spec(space))
    claimed = parse_study_spec(_spec(space, claims=[claim, {**claim, "metric": "area_kl/nfe-4"}]))
    assert claimed.claims[1].metric == "area_kl/nfe-4"  # a convergence area is a reported metric
    assert claimed.space_hash() == plain.space_hash()  # a claim changes nothing the trials train
    for bad, field in (
        ({"axis": "train.optimizer.lr", "best": 0.001}, "claims[0].axis"),  # a range has no values to name
        ({"best": "cosine"}, "claims[0].best"),
        ({"against": ["linear"]}, "claims[0].against"),  # the claimed value itself
        ({"metric": "kl/nfe-8"}, "claims[0].metric"),  # K not evaluated
        ({"where": {"interpolant.schedule": "trig"}}, "claims[0].where"),  # the claim's own axis
        ({"where": {"train.optimizer.lr": 0.001}}, "claims[0].where"),  # a range: no values to hold
    ):
        assert _refused(_spec(space, claims=[{**claim, **bad}]))[0] == field


def test_positional_labels_get_readable_names_from_what_differs() -> None:
    axis = Axis.model_validate(
        {"grid": [{"name": "adam", "lr": 0.001}, {"name": "adamw", "lr": 0.001, "weight_decay": 0.0}, {"name": "adam"}]}
    )
    assert axis.labels() == ["option-0", "option-1", "option-2"]
    assert axis.display_names() == {"option-0": "adam lr=0.001", "option-1": "adamw lr=0.001 weight_decay=0.0",
                                    "option-2": "adam"}  # fmt: skip
    assert Axis.model_validate({"grid": [{"name": "lsd"}, {"name": "esd"}]}).display_names() == {}  # names suffice


def test_trial_run_names_carry_the_configuration() -> None:
    from mgm_studies.studies.mlflow_sweep import run_name

    labels = {"objective.intermediate_time": "t_minus_tau", "objective.tau": 0.1, "train.seed": 1}
    assert run_name(labels) == "t_minus_tau tau=0.1 seed=1"


def test_a_sweep_may_optimise_a_convergence_area() -> None:
    spec = parse_study_spec(_spec({"interpolant.schedule": {"choice": ["linear", "trig"]}}, metric="area_kl/nfe-4"))
    assert spec.metric == ["area_kl/nfe-4"]
    assert _refused(_spec({"interpolant.schedule": {"choice": ["linear"]}}, metric="area_fid/nfe-4"))[0] == "metric"


@pytest.mark.parametrize("name", ["fifo", "asha"])
def test_a_bare_scheduler_name_is_that_scheduler_with_its_defaults(name: str) -> None:
    space = {"train.steps": {"choice": [5, 6]}}
    short = parse_study_spec(_spec(space, search={"scheduler": name}))
    long = parse_study_spec(_spec(space, search={"scheduler": {"name": name}}))
    assert short.search == long.search and short.search.scheduler.name == name
    assert short.space_hash() == long.space_hash()


def test_an_unknown_scheduler_name_is_refused_naming_the_field() -> None:
    field, message = _refused(_spec({"train.steps": {"choice": [5, 6]}}, search={"scheduler": "fiffo"}))
    assert field == "search.scheduler.name" and "'fifo' or 'asha'" in message and "fiffo" in message


def test_one_field_of_a_union_section_is_replaced_alone(tmp_path: Path) -> None:
    # The base (a file) holds a `file` data section; an axis and a `sweep --set` each replace only its path.
    for name in ("a.npy", "b.npy", "c.npy"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**_base(), "data": {"name": "file", "path": "a.npy"}}))
    space = {"data.path": {"grid": ["a.npy", "b.npy"]}}
    (tmp_path / "space.yaml").write_text(
        yaml.safe_dump(_spec(space, search={"algorithm": "grid"}) | {"base": "base.yaml"})
    )
    spec = load_study_spec(tmp_path / "space.yaml")
    data = spec.trial_config({"data.path": str(tmp_path / "b.npy")}, 0).data
    assert (data.name, data.path) == ("file", str(tmp_path / "b.npy"))
    (tmp_path / "space.yaml").write_text(
        yaml.safe_dump(_spec({"train.steps": {"choice": [5, 6]}}) | {"base": "base.yaml"})
    )
    spec = load_study_spec(tmp_path / "space.yaml", sweep_overrides([f"data.path={tmp_path / 'c.npy'}"]))
    assert spec.base["data"] == {"name": "file", "path": str(tmp_path / "c.npy")}
    spec = parse_study_spec(_spec({"data.size": {"choice": [8, 16]}}) | {"base": _base(data={"name": "digits"})})
    assert spec.trial_config({"data.size": 16}, 0).data.size == 16


def test_a_field_the_chosen_union_member_lacks_is_refused_naming_the_member() -> None:
    field, message = _refused(_spec({"data.path": {"choice": ["a.npy"]}}))  # the base's data is the checkerboard
    assert field == "space.data.path"
    assert (
        "data 'checkerboard' has no field 'path' (its fields: name)" in message and "give the whole `data`" in message
    )
    field, message = _refused(
        _spec({"train.steps": {"choice": [5, 6]}}), overrides=sweep_overrides(["data.path=a.npy"])
    )
    assert field == "--set data.path" and "data 'checkerboard' has no field 'path'" in message
