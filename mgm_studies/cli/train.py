"""The verbs on a run config: `train` (or resume) a tracked run, `validate` a config or a search space, and
`train-extractor` (the offline FID extractor, on a run config's images)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mgm_studies.cli.arguments import add_verb, at_least, device, name, naming, overrides, print_metrics
from mgm_studies.configbase import ConfigError
from mgm_studies.names import TAG_KIND, check_name
from mgm_studies.yaml_input import read_config, read_yaml


def cmd_train(args: argparse.Namespace) -> int:
    """Train one run from a YAML run config; the last line printed is the MLflow run id."""
    if args.config:  # a malformed or hostile file or --set is refused before torch is imported
        read_config(args.config, args.set)
    from mgm_studies import runs, tracking
    from mgm_studies.config import load_run_config
    from mgm_studies.tracking_store import check_reachable

    resume = None
    if args.resume:
        if args.config or args.set:
            raise ConfigError.single("--resume", "a resumed run keeps its own config: give no CONFIG and no --set")
        from mgm_studies.api import get_run

        with naming({"run_id": "--resume"}):
            client, run = get_run(args.resume, tracking.tracking_uri())
        config, resume = runs.resumable(client, run)
    else:
        check_name(args.experiment, "--experiment")  # a resumed run keeps its own experiment: not checked then
        if not args.config:
            raise ConfigError.single("CONFIG", "give a run config file (or --resume RUN_ID)")
        config = load_run_config(args.config, args.set)
        check_reachable(tracking.tracking_uri())  # an unreachable store is named now, before data or a teacher
    on = device(args.device or config.resources.device)
    # Bad data or a bad teacher fails here, before anything is written to this run (a config teacher is trained
    # here as its own run when none has finished yet).
    parts = runs.build_run(config, device=on)
    if resume is None:
        client = tracking.client()  # a new run: the store is created only now, once the run's input is valid
    run_id, checkpoint_dir = runs.open_run(
        client, config, experiment=args.experiment, device=on, resume=resume, checkpoint_root=args.checkpoint_root
    )
    try:
        result = runs.train_tracked(
            client, config, run_id, checkpoint_dir, device=on, progress=not args.quiet, parts=parts
        )
    except KeyboardInterrupt:
        print(f"interrupted; resume with: mgm-studies train --resume {run_id}", file=sys.stderr)
        print(run_id)
        return 130
    if result.status == "diverged":
        print(f"diverged: the loss or gradient was not finite at step {result.step}", file=sys.stderr)
        print(run_id)
        return 1
    print(f"finished {result.step} steps ({result.steps_per_s:.1f} steps/s)")
    print_metrics(result.metrics)
    print(run_id)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a run config (and its data and teacher) or a search space; exit 0 if valid, 2 if not."""
    data = read_yaml(args.config)  # a malformed or hostile file is refused before torch is imported
    from mgm_studies.config import load_run_config
    from mgm_studies.runs import check_run
    from mgm_studies.studies.space import is_study_spec, load_study_spec

    if is_study_spec(data):
        study = load_study_spec(Path(args.config))
        axes = ", ".join(f"{key} ({axis.kind})" for key, axis in study.space.items())
        print(
            f"valid search space {study.name!r}: {study.search.algorithm} over {axes}; metric "
            f"{', '.join(study.metric)} ({', '.join(study.mode)}); seeds {study.seeds}; hash {study.space_hash()}"
        )
        return 0
    config = load_run_config(args.config)
    dataset = check_run(config)
    print(
        f"valid run config: objective {config.objective.name}, data {config.data.name} (dimension {dataset.dim}), "
        f"{config.train.num_steps} steps, config hash {config.config_hash()}"
    )
    return 0


def cmd_train_extractor(args: argparse.Namespace) -> int:
    """Train the small classifier that scores FID offline (eval.fid.extractor: mgm-offline) on the labelled images of
    CONFIG's data section; write its weights (the last line printed is the file) and log them to MLflow as an
    artifact. Without one, runs train the same extractor on first use and cache it."""
    from mgm_studies import tracking
    from mgm_studies.builders import build_dataset
    from mgm_studies.config import load_run_config
    from mgm_studies.data import data_shape
    from mgm_studies.metrics.extractor import save_extractor, train_extractor, weights_hash

    config = load_run_config(args.config)
    dataset = build_dataset(config)
    if len(data_shape(dataset)) != 3 or getattr(dataset, "labels", None) is None:
        raise ConfigError.single("data", f"{config.data.name!r} is not labelled image data: nothing to train on")
    payload = train_extractor(
        dataset.images, dataset.labels, steps=args.steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr
    )
    out = Path(args.out or Path("extractors") / f"{dataset.identity()}.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".tmp")
    save_extractor(payload, partial)
    partial.replace(out)
    digest = weights_hash(out)
    client = tracking.client()
    experiment = tracking.experiment_id(client, args.experiment)
    tags = {TAG_KIND: "extractor", "mgm.data": dataset.identity(), "mgm.weights_hash": digest}
    run_id = client.create_run(experiment, run_name=f"extractor-{dataset.identity()}", tags=tags).info.run_id
    params = {"data": config.data.model_dump_json(), "steps": args.steps, "batch_size": args.batch_size}
    for key, value in {**params, "seed": args.seed, "lr": args.lr}.items():
        client.log_param(run_id, key, str(value))
    client.log_metric(run_id, "heldout_accuracy", float(payload["heldout_accuracy"]))
    client.log_artifact(run_id, str(out), "extractor")
    tracking.finish_run(client, run_id, "finished")
    print(f"held-out accuracy {payload['heldout_accuracy']:.4f}; weights {digest}; MLflow run {run_id}")
    print(f"use it with  eval: {{metrics: [fid], fid: {{extractor: mgm-offline, weights: {out.resolve()}}}}}")
    print(out.resolve())
    return 0


def add_verbs(verbs: argparse._SubParsersAction) -> None:
    p = add_verb(verbs, cmd_train, "train one run and log it to MLflow")
    p.add_argument("config", nargs="?", metavar="CONFIG", help="run config (YAML)")
    overrides(p, "override a config value by dotted key, e.g. --set train.optimizer.lr=3e-4 (repeatable)")
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run from its newest checkpoint")
    p.add_argument(
        "--experiment",
        default=os.environ.get("MLFLOW_EXPERIMENT_NAME", "mgm-studies"),
        help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME or 'mgm-studies')",
    )
    p.add_argument("--checkpoint-root", help="folder for resumable checkpoints (default ./checkpoints)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override resources.device")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add_verb(verbs, cmd_validate, "check a run config or a search space without running anything", epilog=None)
    p.add_argument("config", metavar="FILE", help="run config or search space (YAML)")

    p = add_verb(verbs, cmd_train_extractor, "train the offline FID feature extractor on a run config's image data")
    p.add_argument("config", metavar="CONFIG", help="a run config (YAML) whose data section names labelled images")
    p.add_argument("--out", help="weights file (default extractors/<data identity>.pt)")
    p.add_argument("--steps", type=at_least(1), default=600)
    p.add_argument("--batch-size", type=at_least(1), default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--experiment", type=name, default="mgm-studies-extractors", help="MLflow experiment of the extractor's run"
    )
