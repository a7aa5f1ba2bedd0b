"""The live view of a running sweep (issue 16): the ETA and best-so-far computation, the parent run's live metrics
during a real sweep (real local Ray and Tune, SQLite MLflow), `mgm-studies status`, and a `report` of a sweep still
running (its store built by hand)."""

from __future__ import annotations

import os
import time

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from test_sweep import BASE, runs, study

from mgm_studies import cli, names
from mgm_studies.studies import live, status
from mgm_studies.studies.live import TrialRecord, summarise
from mgm_studies.studies.search import planned_trials, tune_search
from mgm_studies.studies.sweep import run_sweep

KL = "kl/nfe-2"


def _records() -> list[TrialRecord]:
    return [
        TrialRecord("a", "finished", 0.0, 100.0, {KL: 0.5}),
        TrialRecord("b", "finished", 0.0, 140.0, {KL: 0.3}),
        TrialRecord("c", "stopped", 100.0, 160.0, {KL: 0.1}),  # stopped early: never the best
        TrialRecord("d", "running", 950.0),
        TrialRecord("e", "running", 990.0),
    ]


def test_the_eta_shares_the_work_left_over_the_trials_run_at_once():
    # Mean of the done trials 100 s; running trials have 50 s and 90 s left, one trial is still to start: 240 s of
    # work over 2 slots.
    summary = summarise(_records(), metrics=[KL], modes=["min"], planned=6, max_concurrent=2, now=1000.0)
    assert summary.counts == dict.fromkeys(names.STATUSES, 0) | {
        "running": 2,
        "finished": 2,
        "stopped": 1,
        "pending": 1,
    }
    assert (summary.done, summary.mean_trial_s, summary.slots, summary.eta_s) == (3, 100.0, 2, 120.0)
    assert summary.eta_text() == "about 2 min 00 s left (3 of 6 trials done, mean 1 min 40 s per trial, 2 at a time)"
    value, record = summary.best[KL]
    assert (value, record.run_id) == (0.3, "b")
    # max_concurrent caps the slots; the most trials seen at once sets them (the resources bound it too); the
    # longest running trial's remainder is a floor.
    assert summarise(_records(), metrics=[KL], modes=["min"], planned=6, max_concurrent=1, now=1000.0).eta_s == 240.0
    many = summarise(_records(), metrics=[KL], modes=["max"], planned=6, max_concurrent=None, now=1e3, peak_running=4)
    assert (many.slots, many.eta_s, many.best[KL][1].run_id) == (4, 90.0, "a")


def test_best_so_far_ignores_non_finite_values_and_the_eta_waits_for_a_finished_trial():
    nan = TrialRecord("n", "finished", 0.0, 10.0, {KL: float("nan")})
    ok = TrialRecord("o", "finished", 0.0, 10.0, {KL: 2.0})
    assert summarise([nan, ok], metrics=[KL], modes=["min"], planned=2, max_concurrent=None, now=20.0).best[KL][0] == 2
    started = [TrialRecord("r", "running", 0.0)]
    waiting = summarise(started, metrics=[KL], modes=["min"], planned=3, max_concurrent=None, now=5.0)
    assert waiting.eta_s is None and waiting.best == {} and waiting.counts["pending"] == 2
    assert waiting.eta_text() == "unknown until a trial ends (0 of 3 trials done)"
    unplanned = summarise([ok], metrics=[KL], modes=["min"], planned=None, max_concurrent=None, now=20.0)
    assert unplanned.eta_s is None and "pending" not in unplanned.counts
    assert summarise([ok], metrics=[KL], modes=["min"], planned=1, max_concurrent=None, now=20.0).eta_s == 0.0


def test_live_steps_increase_and_the_plan_counts_tunes_expansion(tmp_path):
    assert [live.next_step(100.0, now, last) for now, last in [(130.4, -1), (130.9, 30), (129.0, 31)]] == [30, 31, 32]
    grid = study(tmp_path, search={"algorithm": "grid"}, space={"interpolant.schedule": {"grid": ["linear", "trig"]}})
    assert planned_trials(*tune_search(grid, 2)[1:]) == 4  # 2 repeats of the grid
    seeded = study(tmp_path, search={"algorithm": "grid"}, space={"model.hidden": {"grid": [8, 16, 32]}}, seeds=[0, 1])
    assert planned_trials(*tune_search(seeded, 1)[1:]) == 6
    tpe = study(tmp_path, search={"num_samples": 3}, space={"model.hidden": {"int": [8, 32]}}, seeds=[0, 1])
    assert planned_trials(*tune_search(tpe, 3)[1:]) == 6


@pytest.mark.usefixtures("ray_cluster")
def test_a_sweep_shows_its_progress_on_its_parent_run_while_it_runs(mlflow_env, tmp_path, capsys):
    spec = study(
        tmp_path,
        base={**BASE, "train": {**BASE["train"], "steps": 40}},
        search={"algorithm": "grid", "max_concurrent": 2},
        space={"interpolant.schedule": {"grid": ["linear", "trig"]}},
        seeds=[0, 1],
    )
    outcome = run_sweep(spec, storage=str(tmp_path / "ray"), verbose=0)
    assert outcome.statuses == {"finished": 4}
    client, parents, children = runs("test_study")
    parent = parents[0]
    run_id, ended = parent.info.run_id, parent.info.end_time
    assert parent.data.params[names.PARAM_PLANNED] == "4"

    def history(name: str):
        return sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)

    finished = history("trials/finished")
    steps, values = [m.step for m in finished], [m.value for m in finished]
    assert len(finished) >= 5 and len(set(steps)) == len(steps)  # an update per trial's end at least, then the summary
    assert values[0] == 0 and values == sorted(values) and values[-1] == 4
    assert max(m.value for m in history("trials/running")) >= 1
    assert sum(m.timestamp < ended for m in finished) >= 4  # written while the sweep ran
    pending = [m.value for m in history("trials/pending")]
    assert pending == sorted(pending, reverse=True) and pending[0] >= 2 and pending[-1] == 0
    etas = history(names.METRIC_ETA)
    assert any(m.value > 0 and m.timestamp < ended for m in etas)  # an ETA once a trial was done, before the end
    best = history(f"best/{KL}")
    assert len(best) >= 2 and best[-1].value == min(c.data.metrics[KL] for c in children)
    # The final summary: the same names, its values the outcome's.
    assert parent.data.metrics["trials/finished"] == 4 and parent.data.metrics["trials/running"] == 0
    assert parent.data.metrics[f"best/{KL}"] == outcome.best[KL][1]
    assert parent.data.tags[f"mgm.best_run.{KL}"] == outcome.best[KL][0]
    assert parent.data.tags[names.TAG_LIVE_ETA] == "done" and parent.data.metrics[names.METRIC_ETA] == 0

    capsys.readouterr()
    assert cli.main(["status", "test_study"]) == 0
    out = capsys.readouterr().out
    assert f"(parent run {run_id}): finished" in out
    assert "trials: 4 finished, 0 pending (4 of 4 done)" in out
    assert f"best {KL} = {outcome.best[KL][1]:.4g} (run {outcome.best[KL][0]}): interpolant.schedule=" in out


def _running_sweep(tmp_path):
    """A sweep as the store holds it while it runs (built by hand): 4 trials planned, 1 finished, 1 running; the
    parent's live view written once by the driver's own code."""
    spec = study(tmp_path, space={"interpolant.schedule": {"choice": ["linear", "trig"]}})
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    eid = client.create_experiment("test_study")
    tags = {"mgm.kind": "sweep", "mgm.sweep": "test_study-abc", "mgm.status": "running"}
    parent = client.create_run(eid, run_name="sweep-test_study-abc", tags=tags).info.run_id
    params = {"metric": KL, "mode": "min", "swept": "interpolant.schedule", "seeds": "0", "search.algorithm": "optuna"}
    for key, value in {**params, names.PARAM_PLANNED: "4"}.items():
        client.log_param(parent, key, value)
    for i, (schedule, state) in enumerate([("linear", "finished"), ("trig", "running")]):
        child_tags = {
            "mgm.kind": "trial",
            "mlflow.parentRunId": parent,
            "mgm.status": state,
            "mgm.trial_id": f"t{i}",
            "mgm.trial_params": f'{{"interpolant.schedule": "{schedule}", "train.seed": 0}}',
        }
        child = client.create_run(eid, run_name=f"t{i}", tags=child_tags).info.run_id
        for key, value in {"interpolant.schedule": schedule, "train.seed": "0"}.items():
            client.log_param(child, key, value)
        if state == "finished":
            client.log_batch(child, metrics=[Metric(KL, 0.25, int(time.time() * 1000), 40)])
            client.set_terminated(child, "FINISHED")
    view = live.LiveView(client, eid, parent, study=spec, max_concurrent=2)
    view.write(time.time())
    return client, parent


def test_status_and_report_of_a_running_sweep_say_it_is_partial(mlflow_env, tmp_path, capsys, monkeypatch):
    client, parent = _running_sweep(tmp_path)
    assert cli.main(["status", "test_study"]) == 0
    out = capsys.readouterr().out
    assert f"(parent run {parent}): running" in out
    assert "trials: 1 running, 1 finished, 2 pending (1 of 4 done)" in out
    assert f"best {KL} = 0.25 (run " in out and "interpolant.schedule=linear, train.seed=0" in out
    assert "ETA: " in out and "of 4 trials done" in out

    assert cli.main(["report", "test_study"]) == 0
    report = (tmp_path / "reports" / "test_study" / "report.md").read_text()
    assert "Partial report: 1 of 4 trials done, the sweep is still running." in report

    # --watch prints again until the sweep ends (here: it ends during the first wait).
    def end_the_sweep(seconds: float) -> None:
        client.set_tag(parent, "mgm.status", "interrupted")
        client.set_terminated(parent, "KILLED")

    monkeypatch.setattr(status.time, "sleep", end_the_sweep)
    assert cli.main(["status", "test_study", "--watch", "2"]) == 0
    blocks = capsys.readouterr().out.split("\n\n")
    assert len(blocks) == 2 and "): running" in blocks[0] and "): interrupted" in blocks[1]
    assert cli.main(["status", "test_study", "--watch", "0"]) == 2
    assert cli.main(["status", "no_such_study"]) == 2
