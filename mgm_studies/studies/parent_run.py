"""A sweep's MLflow parent run: the experiment's description, the parent opened before Tune starts (created, or found
again by its sweep tag on a resume), and closed with the sweep's summary once Tune returns.

The parent is written only on the sweep's driver: here, and by `MlflowSweepCallback` (`mlflow_sweep.py`: its child
runs, and the live view of `live.py`) while the trials run.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import yaml
from mlflow.entities import Param

from mgm_studies import names, tracking
from mgm_studies.studies import live
from mgm_studies.studies.space import StudySpec


@dataclass
class SweepOutcome:
    sweep: str
    path: str
    parent_run_id: str
    experiment: str  # the MLflow experiment the sweep was tracked in
    statuses: dict[str, int] = field(default_factory=dict)  # mgm.status -> number of trials
    best: dict[str, tuple[str, float, dict]] = field(default_factory=dict)  # metric -> (child run id, value, params)
    interrupted: bool = False


def experiment_description(study: StudySpec) -> str:
    """What the MLflow UI shows above a new study's runs: the study, and how to compare its trials."""
    params = ", ".join(f"`params.{k}`" for k in [*study.space, names.SEED])
    metrics = ", ".join(f"`metrics.{m}`" for m in study.metric)
    return (
        f"Study {study.name}: {study.description or ''}\n\nSwept: {', '.join(study.space)}; seeds "
        f"{', '.join(map(str, study.seeds))}; optimised: {', '.join(study.metric)} ({', '.join(study.mode)}). Each "
        f"sweep is a parent run with one child run per trial. To compare trials, add the columns {params} and "
        f"{metrics} from the runs table's Columns menu."
    )


def open_parent_run(
    client, experiment_id: str, study: StudySpec, sweep: str, storage_path: str, overrides: list[str], resources: str
) -> str:
    """The sweep's parent run: found by its sweep tag (a resume), else created; returns its id. The overrides
    (`--set`, the resource flags) and the resources (JSON) of this attempt are its tags: a resume may change the
    resources without changing the sweep (`studies/overrides.py`)."""
    query = f"tags.`{names.TAG_SWEEP}` = '{sweep}' and tags.`{names.TAG_KIND}` = '{names.KIND_SWEEP}'"
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    attempt = {names.TAG_OVERRIDES: json.dumps(overrides), names.TAG_RESOURCES: resources}
    # Claims change nothing the trials train (not in the space hash): a resume records the space's current ones.
    attempt[names.TAG_CLAIMS] = json.dumps([c.model_dump(mode="json") for c in study.claims])
    if found:  # a resume: running again (an earlier attempt may have closed it as interrupted or error)
        run_id = found[0].info.run_id
        before = found[0].data.tags.get(names.TAG_RESOURCES)
        if before is not None and before != resources:
            print(
                f"resources changed since this sweep started ({before} -> {resources}): trials that Ray Tune had "
                "created keep the resources it reserved for them (Tuner.restore); Ray Train workers of `train` "
                "trials and the device of every trial follow the new ones",
                file=sys.stderr,
            )
        client.update_run(run_id, status="RUNNING")
        for key, value in {names.TAG_STATUS: "running", **attempt}.items():
            client.set_tag(run_id, key, value)
        return run_id
    search = study.search
    tags = {
        names.TAG_SWEEP: sweep,
        names.TAG_KIND: names.KIND_SWEEP,
        "mgm.study": study.name,
        "mgm.space_hash": study.space_hash(),
        "mgm.storage": storage_path,
        names.TAG_CODE_VERSION: tracking.code_version(),
        names.TAG_STATUS: "running",
        **attempt,
    }
    run_id = client.create_run(experiment_id, run_name=f"sweep-{sweep}", tags=tags).info.run_id
    params = {
        "search.algorithm": search.algorithm,
        "search.num_samples": search.num_samples,
        "search.max_concurrent": search.max_concurrent,
        "search.seed": search.seed,
        "search.scheduler": search.scheduler.model_dump_json(),
        "metric": ",".join(study.metric),
        "mode": ",".join(study.mode),
        "seeds": ",".join(map(str, study.seeds)),
        "swept": ",".join(study.space),
    }
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    text = study.source.read_text() if study.source is not None else yaml.safe_dump(study.model_dump(mode="json"))
    client.log_text(run_id, text, "space.yaml")
    return run_id


def close_parent_run(client, study: StudySpec, outcome: SweepOutcome, experiment_id: str, results) -> SweepOutcome:
    """After Tune returned `results`: close the children still running as interrupted, write the parent's final
    summary and close it; fills `outcome` in (statuses, best per metric, interrupted) and returns it."""
    parent_run_id = outcome.parent_run_id
    children = live.children(client, experiment_id, parent_run_id)
    # Interrupted: a child still running, or a trial Tune knows of that never got a child run. Tune has stopped
    # every trial by now: a child still running is closed as interrupted (`--resume` continues it, and opens it again).
    running = [r for r in children if r.data.tags.get(names.TAG_STATUS, "running") == "running"]
    outcome.interrupted = bool(running) or len(results) > len(children)
    for run in running if outcome.interrupted else []:
        tracking.finish_run(client, run.info.run_id, "interrupted")
        run.data.tags[names.TAG_STATUS] = "interrupted"
    records = [live.record_of(r) for r in children]
    summary = live.write_final(client, client.get_run(parent_run_id), records, study, interrupted=outcome.interrupted)
    outcome.statuses = {status: n for status, n in summary.counts.items() if n and status != "pending"}
    by_id = {r.info.run_id: r for r in children}
    for metric, (value, record) in summary.best.items():
        run = by_id[record.run_id]
        params = {k: axis_param(run.data.params, k) for k in study.space}
        params[names.SEED] = run.data.params.get(names.SEED)
        outcome.best[metric] = (record.run_id, value, params)
    tracking.finish_run(client, parent_run_id, "interrupted" if outcome.interrupted else "finished")
    return outcome


def axis_param(params: dict[str, str], key: str) -> str | None:
    """An axis's value among a run's MLflow params (flattened dotted keys): the param itself, or for an axis over a
    whole section (`objective`) its `name`, else its keys as JSON."""
    if key in params:
        return params[key]
    if f"{key}.name" in params:
        return params[f"{key}.name"]
    inside = {k[len(key) + 1 :]: v for k, v in params.items() if k.startswith(f"{key}.")}
    return json.dumps(inside, sort_keys=True) if inside else None
