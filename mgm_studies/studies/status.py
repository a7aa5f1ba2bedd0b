"""`mgm-studies status STUDY`: where a sweep stands, read from MLflow while it runs or after it ended.

The trials' counts and the best so far per metric come from the child runs (what they hold now); the ETA is the
sweep driver's own (`live/eta_s` on the parent run, `live.py`), less the time since it was written. A parent run
still RUNNING whose driver stopped writing (killed: no final summary closed it) is said to be so.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

from mgm_studies import names
from mgm_studies.configbase import ConfigError
from mgm_studies.studies import live
from mgm_studies.tracking_store import check_reachable, shown, sqlite_path, tracking_uri

_STATE = {"RUNNING": "running", "FINISHED": "finished", "KILLED": "interrupted", "FAILED": "error"}


@dataclass(frozen=True)
class SweepStatus:
    study: str
    sweep: str  # the sweep's name (study name and space hash)
    parent_run_id: str
    state: str  # running | finished | interrupted | error
    elapsed_s: float
    summary: live.LiveSummary  # counts and best from the children; its ETA is not used
    eta_s: float | None  # the driver's ETA now; None when not known
    eta_text: str | None  # the driver's last `mgm.live.eta`
    updated_ago_s: float | None  # since the driver's last live update


def read_status(study: str, *, tracking_uri: str, sweep_run_id: str | None = None) -> SweepStatus:
    """The state of `study`'s newest sweep (or of the sweep whose parent run is `sweep_run_id`)."""
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        raise ConfigError.single("STUDY", f"no study {study!r} in {shown(tracking_uri)}")
    eid = experiment.experiment_id
    query = f"tags.`{names.TAG_KIND}` = '{names.KIND_SWEEP}'"
    sweeps = client.search_runs([eid], filter_string=query, order_by=["start_time DESC"])
    if sweep_run_id is not None:
        sweeps = [r for r in sweeps if r.info.run_id == sweep_run_id]
        if not sweeps:
            raise ConfigError.single("--sweep", f"no sweep run {sweep_run_id!r} in study {study!r}")
    if not sweeps:
        raise ConfigError.single("STUDY", f"study {study!r} has no sweep in {shown(tracking_uri)}")
    parent, now = sweeps[0], time.time()
    records = [live.record_of(run) for run in live.children(client, eid, parent.info.run_id)]
    metrics = [m for m in parent.data.params.get("metric", "").split(",") if m]
    modes = [m for m in parent.data.params.get("mode", "").split(",") if m] or ["min"] * len(metrics)
    planned = live.planned_of(parent.data.params)
    summary = live.summarise(records, metrics=metrics, modes=modes, planned=planned, max_concurrent=None, now=now)
    state = _STATE.get(parent.info.status, parent.info.status.lower())
    if state != "running":  # the sweep's own word for how it ended
        state = parent.data.tags.get(names.TAG_STATUS) or state
    end_s = parent.info.end_time / 1000 if parent.info.end_time and state != "running" else now
    updated = parent.data.tags.get(names.TAG_LIVE_UPDATED)
    ago = now - calendar.timegm(time.strptime(updated, live.UTC_FORMAT)) if updated else None
    eta = parent.data.metrics.get(names.METRIC_ETA)
    return SweepStatus(
        study=study,
        sweep=parent.data.tags.get(names.TAG_SWEEP, parent.info.run_id),
        parent_run_id=parent.info.run_id,
        state=state,
        elapsed_s=end_s - parent.info.start_time / 1000,
        summary=summary,
        eta_s=None if eta is None or state != "running" else max(eta - (ago or 0.0), 0.0),
        eta_text=parent.data.tags.get(names.TAG_LIVE_ETA),
        updated_ago_s=ago,
    )


def format_status(status: SweepStatus) -> str:
    summary = status.summary
    state = status.state
    if state == "running" and status.updated_ago_s is not None and status.updated_ago_s > 3 * live.HEARTBEAT_S:
        state += f" (but no update for {live.format_duration(status.updated_ago_s)}: is its driver still alive?)"
    counts = [f"{n} {s}" for s, n in summary.counts.items() if n and s != "pending"]
    if summary.planned is not None:
        counts.append(f"{summary.counts['pending']} pending")
        plan = f" ({summary.done} of {summary.planned} done)"
    else:
        plan = f" ({summary.done} done)"
    lines = [
        f"sweep {status.sweep} of study {status.study!r} (parent run {status.parent_run_id}): {state}, "
        f"{live.format_duration(status.elapsed_s)} elapsed",
        f"trials: {', '.join(counts) or 'none yet'}{plan}",
    ]
    for metric, (value, record) in summary.best.items():
        setting = ", ".join(f"{k}={v}" for k, v in record.labels.items()) or "(the only configuration)"
        lines.append(f"best {metric} = {value:.4g} (run {record.run_id}): {setting}")
    if not summary.best:
        lines.append("best: no finished trial yet")
    if status.state == "running" and status.updated_ago_s is None:
        lines.append("ETA: unknown (this sweep records no live view)")
    elif status.state == "running":
        eta = live.format_duration(status.eta_s) if status.eta_s is not None else "unknown"
        ago = live.format_duration(status.updated_ago_s)
        lines.append(f"ETA: {eta}; the driver's estimate {ago} ago: {status.eta_text}")
    elif status.state == "interrupted":
        lines.append("continue it with  mgm-studies sweep SPACE.yaml --resume")
    return "\n".join(lines)


def run_status_command(args) -> int:
    """`status STUDY [--sweep RUN_ID] [--watch SECONDS]` (STUDY checked by the parser): print once, or every SECONDS
    until the sweep ends."""
    if args.watch is not None and not args.watch > 0:
        raise ConfigError.single("--watch", f"must be > 0 seconds, got {args.watch}")
    while True:
        status = read_status(args.study, tracking_uri=tracking_uri(), sweep_run_id=args.sweep)
        print(format_status(status), flush=True)
        if args.watch is None or status.state != "running":
            return 0
        time.sleep(args.watch)
        print(flush=True)


def _client(tracking_uri: str):
    """A client of the store; reading never creates a SQLite file."""
    from mlflow.tracking import MlflowClient

    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise ConfigError.single("MLFLOW_TRACKING_URI", f"there is no MLflow store at {path}")
    check_reachable(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)
