"""A study's sweep read back from MLflow: the parent run and one row per trial (the report's only input).

What the sweep wrote (`studies/mlflow_sweep.py`, `studies/parent_run.py`; every name from `names.py`): an experiment
named after the study; a parent run per sweep (tag `mgm.kind=sweep`; params `swept`, `metric`, `mode`, `seeds`,
`search.*`); a child run per trial (tag `mgm.kind=trial`, `mlflow.parentRunId`, `mgm.trial_params` = the trial's axis
labels as JSON, `mgm.status`; the flattened run config as params; `kl/nfe-K`, ... at their evaluation steps). It
imports neither torch nor Ray (tests/test_names.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mgm_studies import names
from mgm_studies.configbase import ConfigError
from mgm_studies.tracking_store import StoreUnreachable, check_reachable, shown, sqlite_path

# The fixed columns of the trial table (then one column per axis, then one per final metric).
COLUMNS = [
    "run_id",
    "run_name",
    "trial_id",
    "status",
    names.SEED,
    "start_time",
    "end_time",
    "duration_s",
    "last_step",
    "workers",
    "cpus",
    "gpus",
    "url",
    "error",  # the first line of a failed trial's error (mgm.error), else empty
]


class TrackingUnreachable(RuntimeError):
    """The tracking store cannot be read (a server that does not answer, a SQLite file that does not exist)."""


@dataclass
class StudyData:
    """One sweep of a study: its parent run and its trials (one row each, every status)."""

    study: str
    tracking_uri: str
    experiment_id: str
    sweep_run_id: str
    sweep_name: str
    sweep_end: pd.Timestamp | None  # None while the sweep is running
    search: dict[str, str]  # the parent's params (search.algorithm, seeds, ...)
    axes: list[str]  # swept keys, in the space's order
    metrics: list[str]  # what the sweep optimised
    modes: list[str]  # "min" | "max", one per metric
    eval_metrics: list[str]  # every final per-NFE quality metric in the trials, sorted by family then K
    trials: pd.DataFrame  # COLUMNS + axes + eval_metrics
    ui_address: str  # the MLflow UI that shows this store
    ui_hint: str | None = None  # how to start that UI, when it is not a server already
    sweeps: list[str] = field(default_factory=list)  # every sweep run id of the study, newest first
    fevals: dict[int, list[float]] = field(default_factory=dict)  # K -> network evaluations per sample at nfe-K
    claims: list[dict] = field(default_factory=list)  # the space's claims (studies/space_spec.ClaimSpec, as JSON)
    option_names: dict[str, dict[str, str]] = field(default_factory=dict)  # axis -> {option-i: its readable name}

    @property
    def store(self) -> str:
        """The tracking URI as a report may print it: credentials dropped, and no absolute path of this machine (a
        SQLite file under the working folder is shown relative to it, anywhere else by its file name)."""
        return portable(self.tracking_uri)

    def results_table(self) -> pd.DataFrame:
        """The trial table with the study and sweep ids on every row: results.parquet, and `mgm_studies.results`."""
        return self.trials.assign(study=self.study, sweep_run_id=self.sweep_run_id, parent_run_id=self.sweep_run_id)

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_address}/#/experiments/{self.experiment_id}/runs/{run_id}"

    @property
    def main_axis(self) -> str | None:
        return self.axes[0] if self.axes else None

    def mode_of(self, metric: str) -> str:
        """The sweep's mode for its own metrics; lower is better for every other quality metric (KL, FID, SW2)."""
        return self.modes[self.metrics.index(metric)] if metric in self.metrics else "min"


def portable(tracking_uri: str) -> str:
    """`tracking_uri` without credentials or an absolute path of this machine (see `StudyData.store`)."""
    path = sqlite_path(tracking_uri)
    if path is None:
        return shown(tracking_uri)
    try:
        return f"sqlite:///{path.resolve().relative_to(Path.cwd().resolve())}"
    except ValueError:
        return f"sqlite:///{path.name}"


def ui_address(tracking_uri: str) -> tuple[str, str | None]:
    """(address of the MLflow UI for this store, how to start it when it is not a server; the store's path as
    `portable` shows it)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/"), None
    address = "http://127.0.0.1:5000"
    return address, f"mlflow ui --backend-store-uri {portable(tracking_uri)} --host 127.0.0.1 --port 5000"


def read_client(tracking_uri: str):
    """A client for the store, refusing (TrackingUnreachable) one that cannot be read: reading must never create a
    SQLite file, and a server that does not answer fails fast instead of after MLflow's minutes of retries."""
    from mlflow.tracking import MlflowClient

    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise TrackingUnreachable(f"no MLflow store at {path} (tracking URI {tracking_uri})")
    try:
        check_reachable(tracking_uri)  # a server that does not answer, or a file that is not SQLite, in seconds
    except StoreUnreachable as exc:
        raise TrackingUnreachable(str(exc)) from None
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # connection refused, DNS, TLS, a corrupt file: the message says which
        raise TrackingUnreachable(f"cannot read the MLflow tracking store {shown(tracking_uri)}: {exc}") from exc
    return client


def collect_study(study: str, *, tracking_uri: str, sweep_run_id: str | None = None) -> StudyData:
    """Read the newest sweep of `study` (or the sweep whose parent run is `sweep_run_id`) and its trials.

    Raises ConfigError (exit 2) for an unknown study, a study without sweeps or trials, or an unknown sweep id;
    TrackingUnreachable (exit 1) when the store cannot be read."""
    client = read_client(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments(max_results=200))
        raise ConfigError.single(
            "STUDY", f"no study {study!r} in {shown(tracking_uri)}; its studies: {', '.join(known) or 'none'}"
        )
    eid = experiment.experiment_id
    sweeps = client.search_runs(
        [eid], filter_string=f"tags.`{names.TAG_KIND}` = '{names.KIND_SWEEP}'", order_by=["start_time DESC"]
    )
    if not sweeps:
        raise ConfigError.single(
            "STUDY", f"study {study!r} has no sweep in {shown(tracking_uri)} (run `mgm-studies sweep`)"
        )
    if sweep_run_id is None:
        parent = sweeps[0]
    else:
        parent = next((r for r in sweeps if r.info.run_id == sweep_run_id), None)
        if parent is None:
            known = ", ".join(r.info.run_id for r in sweeps)
            raise ConfigError.single(
                "--sweep", f"no sweep run {sweep_run_id!r} in study {study!r}; its sweeps: {known}"
            )
    run_id = parent.info.run_id
    children = client.search_runs(
        [eid],
        filter_string=f"tags.`{names.TAG_PARENT}` = '{run_id}' and tags.`{names.TAG_KIND}` = '{names.KIND_TRIAL}'",
        max_results=50_000,
    )
    if not children:
        raise ConfigError.single("STUDY", f"the sweep {run_id} of study {study!r} has no trials yet")
    params = dict(parent.data.params)
    axes = [a for a in params.get("swept", "").split(",") if a]
    metrics = [m for m in params.get("metric", "").split(",") if m]
    modes = [m for m in params.get("mode", "").split(",") if m] or ["min"] * len(metrics)
    address, hint = ui_address(tracking_uri)
    trials = _trial_table(children, axes, address, eid)
    option_names = _option_names(client, run_id)
    for axis, shown_as in option_names.items():  # option-3 -> "s_plus_tau clamp tau=0.2"
        if axis in trials:
            trials[axis] = trials[axis].map(lambda v, shown_as=shown_as: shown_as.get(v, v))
    eval_metrics = _eval_metrics(trials.columns)
    trials = trials[COLUMNS + axes + eval_metrics]
    fevals: dict[int, set[float]] = {}
    for run in children:
        for name, value in run.data.metrics.items():
            if (parsed := names.parse_eval_metric(name)) and parsed[0] in names.COUNTERS:
                fevals.setdefault(parsed[1], set()).add(float(value))
    return StudyData(
        study=study,
        tracking_uri=tracking_uri,
        experiment_id=eid,
        sweep_run_id=run_id,
        sweep_name=parent.data.tags.get(names.TAG_SWEEP, run_id),
        sweep_end=_time(parent.info.end_time),
        search=params,
        axes=axes,
        metrics=metrics,
        modes=modes,
        eval_metrics=eval_metrics,
        trials=trials,
        ui_address=address,
        ui_hint=hint,
        sweeps=[r.info.run_id for r in sweeps],
        fevals={k: sorted(v) for k, v in sorted(fevals.items())},
        claims=json.loads(parent.data.tags.get(names.TAG_CLAIMS, "[]")),
        option_names=option_names,
    )


def _time(ms: int | None) -> pd.Timestamp | None:
    return None if not ms else pd.Timestamp(ms, unit="ms", tz="UTC")


def _trial_table(runs, axes: list[str], address: str, experiment_id: str) -> pd.DataFrame:
    rows = []
    for run in runs:
        tags, params, info = run.data.tags, run.data.params, run.info
        labels = json.loads(tags.get(names.TAG_TRIAL_PARAMS, "{}"))
        start, end = _time(info.start_time), _time(info.end_time)
        workers = int(params.get("resources.workers", 1))
        row = {
            "run_id": info.run_id,
            "run_name": info.run_name,
            "trial_id": tags.get(names.TAG_TRIAL, ""),
            "status": tags.get(names.TAG_STATUS, "running"),
            names.SEED: int(params.get(names.SEED, labels.get(names.SEED, 0))),
            "start_time": start,
            "end_time": end,
            "duration_s": (end - start).total_seconds() if start is not None and end is not None else float("nan"),
            "last_step": int(tags.get(names.TAG_LAST_STEP, 0)),
            "workers": workers,
            "cpus": workers * float(params.get("resources.cpus_per_worker", 1)),
            "gpus": workers * float(params.get("resources.gpus_per_worker", 0)),
            "url": f"{address}/#/experiments/{experiment_id}/runs/{info.run_id}",
            "error": _first_line(tags.get(names.TAG_ERROR, "")) if tags.get(names.TAG_STATUS) == "error" else "",
        }
        for axis in axes:  # the searcher's label (a choice's name, a sampled float), else the config's value
            row[axis] = labels[axis] if axis in labels else params.get(axis)
        diverged = row["status"] == "diverged"
        for name, value in run.data.metrics.items():
            parsed = names.parse_eval_metric(name)
            if parsed and parsed[0] not in names.COUNTERS:
                # A diverged trial's last report holds the sweep's sentinel (names.DIVERGED_VALUE), not a value.
                row[name] = float("nan") if diverged and abs(value) >= names.DIVERGED_VALUE else float(value)
        rows.append(row)
    table = pd.DataFrame(rows)
    for axis in axes:  # one type per column (Parquet needs it): numbers stay numbers, anything mixed becomes text
        column = table[axis]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in column.dropna()):
            table[axis] = column.map(lambda v: v if v is None else str(v))
    return table.sort_values(["trial_id", "run_id"]).reset_index(drop=True)


def _option_names(client, run_id: str) -> dict[str, dict[str, str]]:
    """{axis: {option-i: a readable name}} for the axes whose values a searcher labels by position (whole sections
    with the same `name`, studies/space_spec.Axis.labels): the fields in which the axis's values differ, a string as
    itself and anything else as key=value (e.g. `s_plus_tau clamp tau=0.2`). Read from the sweep's space.yaml;
    {} when it is missing or unreadable (the labels stay)."""
    import tempfile

    import yaml

    from mgm_studies.studies.space_spec import Axis

    try:
        with tempfile.TemporaryDirectory() as tmp:
            space = yaml.safe_load(Path(client.download_artifacts(run_id, "space.yaml", tmp)).read_text())["space"]
        axes = {key: Axis.model_validate(spec) for key, spec in space.items()}
    except Exception:  # an old sweep, a file edited by hand: the positional labels are still correct
        return {}
    return {key: shown_as for key, axis in axes.items() if (shown_as := axis.display_names())}


def _first_line(error: str, limit: int = 200) -> str:
    """The line of a trial's error that says what happened: the last line naming an exception (`ValueError: ...`, as a
    traceback ends), else the last non-empty line; at most `limit` characters."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    named = [line for line in lines if _EXCEPTION_LINE.match(line)]
    line = (named or lines or [""])[-1]
    return line if len(line) <= limit else line[: limit - 1] + "…"


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b[^:]*:")


def _eval_metrics(columns) -> list[str]:
    found = {c: parsed for c in columns if isinstance(c, str) and (parsed := names.parse_eval_metric(c))}
    return sorted(found, key=found.get)


def nfe_ladder(data: StudyData, family: str) -> list[tuple[int, str]]:
    """[(K, "family/nfe-K")] of the metrics measured for `family` (e.g. "kl"), by K."""
    parsed = {name: names.parse_eval_metric(name) for name in data.eval_metrics}
    return [(k, name) for name, (found, k) in parsed.items() if found == family]
