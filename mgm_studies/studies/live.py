"""The live view of a running sweep (issue 16): what its MLflow parent run shows while its trials run.

`MlflowSweepCallback` keeps a `LiveView` of the sweep's trials on its writer thread and writes it to the parent run
on every trial's end, and otherwise at most every `LIVE_INTERVAL_S` seconds when a trial started or reported (at least
every `HEARTBEAT_S`, so `mgm.live.updated` tells a live driver from a dead one):

- `trials/<status>` for every status of `STATUSES` (zeros included: a curve falls back to 0), and `trials/pending`
  (planned, not started yet);
- `best/<metric>`: the best final value among the finished trials, per metric of the sweep; its run in the tag
  `mgm.best_run.<metric>`;
- `live/eta_s`, and the tag `mgm.live.eta` (the estimate in words, and what it rests on); `mgm.live.updated` (UTC).

One `log_batch` per update, at step = seconds since the sweep started (strictly increasing, across resumes too), so
the MLflow UI draws these as curves over time; the final summary (`write_final`) writes the same names once more.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import Metric, RunTag

from mgm_studies import names

LIVE_INTERVAL_S = 5.0
HEARTBEAT_S = 60.0
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # `mgm.live.updated`


@dataclass
class TrialRecord:
    """One trial as the live view knows it: its child run, `mgm.status`, start and end (seconds since the epoch),
    its final metric values and its axis labels (`mgm.trial_params`)."""

    run_id: str
    status: str
    start_s: float
    end_s: float | None = None
    values: dict[str, float] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LiveSummary:
    counts: dict[str, int]  # every status of names.STATUSES (zeros included), and "pending" when the plan is known
    best: dict[str, tuple[float, TrialRecord]]  # metric -> (value, its trial), over finished trials
    planned: int | None
    done: int
    eta_s: float | None  # None until a trial is done, or without a plan
    mean_trial_s: float | None
    slots: int  # trials run at once, as the ETA assumes

    def eta_text(self) -> str:
        """The ETA in words and what it rests on, e.g. `about 2 min 10 s left (4 of 12 trials done, mean 31 s per
        trial, 2 at a time)`."""
        if self.planned is None:
            return "unknown: the sweep does not record how many trials it plans"
        done = f"{self.done} of {self.planned} trials done"
        if self.eta_s is None:
            return f"unknown until a trial ends ({done})"
        return (
            f"about {format_duration(self.eta_s)} left ({done}, mean {format_duration(self.mean_trial_s)} per "
            f"trial, {self.slots} at a time)"
        )


def summarise(
    records: list[TrialRecord],
    *,
    metrics: list[str],
    modes: list[str],
    planned: int | None,
    max_concurrent: int | None,
    now: float,
    peak_running: int = 0,
) -> LiveSummary:
    """Counts, best so far and ETA of a sweep's trials at time `now` (seconds since the epoch).

    ETA: each trial is taken to last `d`, the mean duration of the trials done so far (finished, diverged, stopped by
    the scheduler, failed); a running trial has `max(d - its time so far, 0)` left, every other trial of the plan
    (pending, interrupted) `d`. That work is shared by `slots` trials at a time: the most seen running at once
    (`peak_running`: the cluster's resources bound it, not only max_concurrent), at most `max_concurrent`. ETA =
    the larger of the longest running trial's remainder and work / slots; 0 once the plan is done.
    """
    counts = dict.fromkeys(names.STATUSES, 0)
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    if planned is not None:
        counts["pending"] = max(planned - len(records), 0)
    done = [r for r in records if r.status in names.DONE]
    running = [r for r in records if r.status == "running"]
    durations = [r.end_s - r.start_s for r in done if r.end_s is not None]
    mean = sum(durations) / len(durations) if durations else None
    slots = max(peak_running, len(running), 1)
    slots = min(slots, max_concurrent) if max_concurrent else slots
    eta = None
    if planned is not None and len(done) >= planned:
        eta = 0.0
    elif planned is not None and mean is not None:
        left = [max(mean - (now - r.start_s), 0.0) for r in running]
        waiting = max(planned - len(done) - len(running), 0)
        eta = max(max(left, default=0.0), (sum(left) + waiting * mean) / slots)
    best = {}
    for metric, mode in zip(metrics, modes, strict=True):
        finished = [r for r in records if r.status == "finished"]
        scored = [(r.values[metric], r) for r in finished if math.isfinite(r.values.get(metric, math.nan))]
        if scored:
            best[metric] = (min if mode == "min" else max)(scored, key=lambda item: item[0])
    return LiveSummary(counts, best, planned, len(done), eta, mean, slots)


def parent_batch(summary: LiveSummary, *, step: int, now: float, eta_text: str | None = None):
    """(metrics, tags) of one update of the parent run, at `step`."""
    ms = int(now * 1000)
    metrics = [Metric(f"trials/{status}", float(n), ms, step) for status, n in summary.counts.items()]
    metrics += [Metric(f"best/{metric}", float(value), ms, step) for metric, (value, _) in summary.best.items()]
    if summary.eta_s is not None:
        metrics.append(Metric(names.METRIC_ETA, float(summary.eta_s), ms, step))
    tags = [RunTag(f"mgm.best_run.{metric}", record.run_id) for metric, (_, record) in summary.best.items()]
    tags += [RunTag(names.TAG_LIVE_ETA, eta_text or summary.eta_text()), RunTag(names.TAG_LIVE_UPDATED, utc(now))]
    return metrics, tags


def next_step(start_s: float, now: float, last_step: int) -> int:
    """Seconds since the sweep started, and always after the last step written."""
    return max(int(now - start_s), last_step + 1)


def last_step(client, parent_run_id: str) -> int:
    """The last live step written to the parent run (-1: none)."""
    return max((m.step for m in client.get_metric_history(parent_run_id, "trials/finished")), default=-1)


def planned_of(params: dict[str, str]) -> int | None:
    value = params.get(names.PARAM_PLANNED)
    return int(value) if value is not None else None


def record_planned(client, parent_run_id: str, planned: int) -> None:
    """Log `trials.planned` on the parent (what `report` and `status` count "N of M" against). A parent that a
    fresh Tune experiment takes over (an earlier attempt failed before Tune started) keeps its first number: MLflow
    params never change."""
    if names.PARAM_PLANNED not in client.get_run(parent_run_id).data.params:
        client.log_param(parent_run_id, names.PARAM_PLANNED, str(planned))


def record_of(run) -> TrialRecord:
    """A child run read from MLflow as a TrialRecord."""
    info, tags = run.info, run.data.tags
    return TrialRecord(
        run_id=info.run_id,
        status=tags.get(names.TAG_STATUS, "running"),
        start_s=info.start_time / 1000,
        end_s=info.end_time / 1000 if info.end_time else None,
        values=dict(run.data.metrics),
        labels=json.loads(tags.get(names.TAG_TRIAL_PARAMS, "{}")),
    )


def children(client, experiment_id: str, parent_run_id: str) -> list:
    query = f"tags.`{names.TAG_PARENT}` = '{parent_run_id}' and tags.`{names.TAG_KIND}` = '{names.KIND_TRIAL}'"
    return client.search_runs([experiment_id], filter_string=query, max_results=50_000)


def utc(seconds: float) -> str:
    return time.strftime(UTC_FORMAT, time.gmtime(seconds))


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else (f"{minutes} min {secs:02d} s" if minutes else f"{secs} s")


class LiveView:
    """The sweep's trials as the callback's events report them; the callback's writer thread only (the Tune hooks
    queue the events). The first event reads the parent's start, its last live step and the trials of an earlier
    attempt (a resume) from MLflow; after that, an update is one write."""

    def __init__(self, client, experiment_id: str, parent_run_id: str, *, study, max_concurrent: int | None) -> None:
        self.client, self.experiment_id, self.parent_run_id = client, experiment_id, parent_run_id
        self.metrics, self.modes, self.max_concurrent = list(study.metric), list(study.mode), max_concurrent
        self.records: dict[str, TrialRecord] = {}  # run id -> its trial
        self.peak_running = 0
        self.planned: int | None = None
        self._start_s, self._last_step, self._loaded = 0.0, -1, False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        parent = self.client.get_run(self.parent_run_id)
        self._start_s, self.planned = parent.info.start_time / 1000, planned_of(parent.data.params)
        self._last_step = last_step(self.client, self.parent_run_id)
        for run in children(self.client, self.experiment_id, self.parent_run_id):
            self.records[run.info.run_id] = record_of(run)

    def started(self, run_id: str, at: float) -> None:
        self._load()
        before = self.records.get(run_id)  # a trial restarted (a retry, a resume) keeps its first start
        self.records[run_id] = TrialRecord(run_id, "running", before.start_s if before else at)
        self.peak_running = max(self.peak_running, sum(r.status == "running" for r in self.records.values()))

    def ended(self, run_id: str, status: str, at: float, values: dict[str, float]) -> None:
        self._load()
        record = self.records.setdefault(run_id, TrialRecord(run_id, status, at))
        record.status, record.end_s, record.values = status, at, values

    def write(self, now: float) -> None:
        self._load()
        summary = summarise(
            list(self.records.values()),
            metrics=self.metrics,
            modes=self.modes,
            planned=self.planned,
            max_concurrent=self.max_concurrent,
            now=now,
            peak_running=self.peak_running,
        )
        step = next_step(self._start_s, now, self._last_step)
        metrics, tags = parent_batch(summary, step=step, now=now)
        self.client.log_batch(self.parent_run_id, metrics=metrics, tags=tags)
        self._last_step = step


def write_final(client, parent, records: list[TrialRecord], study, *, interrupted: bool) -> LiveSummary:
    """The sweep's last update of its parent run (`parent`, an MLflow Run), after its last live step: the same names
    as the live updates; returns what it wrote."""
    now = time.time()
    planned = planned_of(parent.data.params)
    summary = summarise(
        records, metrics=list(study.metric), modes=list(study.mode), planned=planned, max_concurrent=None, now=now
    )
    run_id = parent.info.run_id
    step = next_step(parent.info.start_time / 1000, now, last_step(client, run_id))
    text = f"interrupted: {summary.done} of {planned if planned is not None else '?'} trials done"
    metrics, tags = parent_batch(summary, step=step, now=now, eta_text=text if interrupted else "done")
    if interrupted:
        metrics = [m for m in metrics if m.key != names.METRIC_ETA]
    client.log_batch(run_id, metrics=metrics, tags=tags)
    return summary
