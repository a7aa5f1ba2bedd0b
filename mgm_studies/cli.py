"""`mgm-studies`: train, evaluate, sample, validate. Exit codes: 0 success, 2 invalid input, 1 other failure."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

from mgm_studies.configbase import ConfigError
from mgm_studies.names import check_name
from mgm_studies.yaml_input import read_config, read_yaml

EPILOG = (
    "Environment: MLFLOW_TRACKING_URI (default sqlite:///$PWD/mlflow.db), "
    "MGM_STUDIES_CHECKPOINTS (default ./checkpoints)."
)


def _steps(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ConfigError.single("--steps", f"expected positive integers separated by commas, got {text!r}")
    return values


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError.single("resources.device", "'cuda' was asked for but no CUDA device is visible")
    return choice


def _print_metrics(metrics: dict[str, float]) -> None:
    for key in sorted(metrics):
        print(f"  {key:<22} {metrics[key]:.6g}")


# ---------------------------------------------------------------------- verbs
def cmd_validate(args: argparse.Namespace) -> int:
    data = read_yaml(args.config)  # a malformed or hostile file is refused before torch is imported
    from mgm_studies.builders import build_run
    from mgm_studies.config import load_run_config
    from mgm_studies.studies.space import is_study_spec, load_study_spec

    path = Path(args.config)
    if is_study_spec(data):
        study = load_study_spec(path)
        axes = ", ".join(f"{key} ({axis.kind})" for key, axis in study.space.items())
        print(
            f"valid search space {study.name!r}: {study.search.algorithm} over {axes}; metric "
            f"{', '.join(study.metric)} ({', '.join(study.mode)}); seeds {study.seeds}; hash {study.space_hash()}"
        )
        return 0
    config = load_run_config(args.config)
    dataset, _, _ = build_run(config, teachers="check")
    print(
        f"valid run config: objective {config.objective.name}, data {config.data.name} (dimension {dataset.dim}), "
        f"{config.train.num_steps} steps, config hash {config.config_hash()}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.config:  # a malformed or hostile file or --set is refused before torch is imported
        read_config(args.config, args.set)
    from mgm_studies import tracking
    from mgm_studies.builders import build_run
    from mgm_studies.config import load_run_config, parse_run_config
    from mgm_studies.runs import train_tracked
    from mgm_studies.tracking_store import check_reachable

    if args.resume:
        if args.config or args.set:
            raise ConfigError.single("--resume", "a resumed run keeps its own config: give no CONFIG and no --set")
        client, run = _get_run(args.resume, "--resume")
        with tempfile.TemporaryDirectory() as tmp:
            text = tracking.download(client, run.info.run_id, tracking.CONFIG_ARTIFACT, Path(tmp)).read_text()
        config = parse_run_config(json.loads(text))
        run_id, checkpoint_dir = run.info.run_id, Path(run.data.tags[tracking.TAG_CHECKPOINT_DIR])
        _check_resumable(run, checkpoint_dir)
    else:
        check_name(args.experiment, "--experiment")  # a resumed run keeps its own experiment
        if not args.config:
            raise ConfigError.single("CONFIG", "give a run config file (or --resume RUN_ID)")
        config = load_run_config(args.config, args.set)
        check_reachable(tracking.tracking_uri())  # an unreachable store is named now, before data or a teacher
    device = _device(args.device or config.resources.device)
    # Bad data or a bad teacher fails here, before anything is written to this run (a config teacher is trained
    # here as its own run when none has finished yet).
    parts = build_run(config, device=device)
    if args.resume:
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, tracking.TAG_STATUS, "running")
    else:
        client = tracking.client()
        root = Path(args.checkpoint_root or os.environ.get("MGM_STUDIES_CHECKPOINTS", "checkpoints"))
        run_id, checkpoint_dir = tracking.start_run(
            client, config, experiment=args.experiment, device=device, checkpoint_root=root
        )
    if parts[2].teacher_source is not None:
        client.set_tag(run_id, "mgm.teacher_source", parts[2].teacher_source)
    try:
        result = train_tracked(
            client, config, run_id, checkpoint_dir, device=device, progress=not args.quiet, parts=parts
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
    _print_metrics(result.metrics)
    print(run_id)
    return 0


def _check_resumable(run, checkpoint_dir: Path) -> None:
    """A finished run is not resumed, and a run whose checkpoints went missing is not silently restarted."""
    from mgm_studies import tracking
    from mgm_studies.training.checkpoint import latest_checkpoint

    status = run.data.tags.get(tracking.TAG_STATUS)
    if status == "finished":
        raise ConfigError.single("--resume", f"run {run.info.run_id} already finished")
    written = run.data.tags.get("mgm.last_checkpoint_step")
    if written is not None and latest_checkpoint(checkpoint_dir) is None:
        raise ConfigError.single(
            "--resume",
            f"run {run.info.run_id} wrote a checkpoint at step {written} to {checkpoint_dir}, which holds none now "
            "(resume on the machine that ran it, or copy the folder there)",
        )


def _get_run(run_id: str, field: str = "RUN_ID"):
    """(a client of the tracking store, the run `run_id` in it); a ConfigError on `field` when there is no such run.
    A SQLite store that does not exist is not created to find that out."""
    from mlflow.exceptions import MlflowException

    from mgm_studies import tracking
    from mgm_studies.tracking_store import shown, sqlite_path

    uri = tracking.tracking_uri()
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise ConfigError.single(field, f"no run {run_id!r}: there is no MLflow store at {path}")
    client = tracking.client()
    try:
        return client, client.get_run(run_id)
    except MlflowException:
        raise ConfigError.single(field, f"no run {run_id!r} in the tracking store {shown(uri)}") from None


def _load_run_model(args: argparse.Namespace, tmp: Path):
    from mgm_studies import tracking
    from mgm_studies.exported import UnreadableCheckpoint, load_exported

    client, run = _get_run(args.run_id)
    try:
        path = tracking.download(client, run.info.run_id, tracking.MODEL_ARTIFACT, tmp)
    except Exception:
        raise ConfigError.single(
            "RUN_ID",
            f"run {args.run_id} has no {tracking.MODEL_ARTIFACT}: it did not "
            f"finish (status {run.data.tags.get(tracking.TAG_STATUS, run.info.status)})",
        ) from None
    try:
        ema = "config" if args.ema is None else (None if args.ema == "raw" else float(args.ema))
        return client, load_exported(path, ema=ema, device=_device(args.device))
    except UnreadableCheckpoint as exc:
        raise ConfigError.single("RUN_ID", f"run {args.run_id}'s {tracking.MODEL_ARTIFACT}: {exc}") from None
    except ValueError as exc:
        raise ConfigError.single("--ema", f"expected 'raw' or a tracked EMA decay: {exc}") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mgm_studies import tracking
    from mgm_studies.evaluation import evaluate

    steps = _steps(args.steps) if args.steps else None
    if args.num_samples is not None and args.num_samples < 2:
        raise ConfigError.single("--num-samples", f"must be >= 2, got {args.num_samples}")
    with tempfile.TemporaryDirectory() as tmp:
        client, run = _load_run_model(args, Path(tmp))
    import torch

    evaluation = evaluate(
        run.model,
        run.objective,
        run.dataset,
        run.config.eval,
        step=run.step,
        device=torch.device(_device(args.device)),
        steps=steps,
        num_samples=args.num_samples,
        seed=args.seed,
        progress=True,
    )
    tracking.MlflowReporter(
        client, args.run_id, box=run.dataset.histogram, plot_prefix="plots/evaluate"
    ).report_evaluation(evaluation)
    print(f"run {args.run_id}, step {run.step}, EMA {run.ema if run.ema is not None else 'raw'}")
    _print_metrics(evaluation.metrics)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from mgm_studies.data import data_shape
    from mgm_studies.sample_file import check_disk, claim_out, write_samples

    if args.num_samples < 1:
        raise ConfigError.single("--num-samples", f"must be >= 1, got {args.num_samples}")
    if args.steps < 1:
        raise ConfigError.single("--steps", f"must be >= 1, got {args.steps}")
    out = Path(args.out)
    if out.suffix != ".parquet":
        raise ConfigError.single("--out", f"expected a .parquet file name, got {args.out!r}")
    partial = claim_out(out)  # --out is proved writable before the model is loaded
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _, run = _load_run_model(args, Path(tmp))
        shape = data_shape(run.dataset)
        check_disk(partial.parent, args.num_samples, shape)
        nfe = write_samples(
            run.objective,
            run.model,
            shape,
            partial,
            num_samples=args.num_samples,
            num_steps=args.steps,
            seed=args.seed,
            device=torch.device(_device(args.device)),
        )
        partial.replace(out)  # never a half-written file under the requested name
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    print(f"wrote {args.num_samples} samples ({args.steps} steps, {nfe} function evaluations) to {out}")
    return 0


# ---------------------------------------------------------------------- parser
def cmd_sweep(args: argparse.Namespace) -> int:
    if args.experiment is not None:  # refused before Ray is even imported
        check_name(args.experiment, "--experiment")
    from mgm_studies.studies.overrides import sweep_overrides
    from mgm_studies.studies.space import load_study_spec

    overrides = sweep_overrides(
        args.set,
        gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial,
        workers_per_trial=args.workers_per_trial,
    )
    study = load_study_spec(args.space, overrides)  # every override checked here, before Ray is imported
    from mgm_studies.studies.sweep import run_sweep_command

    return run_sweep_command(args, study, [override.shown() for override in overrides])


def cmd_report(args: argparse.Namespace) -> int:
    studies = [check_name(study, "STUDY") for study in args.study]  # before the report stack is imported
    sweeps = args.sweep or []
    if sweeps and len(sweeps) != len(studies):
        raise ConfigError.single("--sweep", f"give one --sweep per study ({len(studies)}) or none, got {len(sweeps)}")
    from mgm_studies import tracking
    from mgm_studies.reporting.build import HTML, build_report
    from mgm_studies.reporting.compare import build_comparison, default_name

    name = studies[0] if len(studies) == 1 else check_name(default_name(studies), "STUDY (the comparison's folder)")
    if args.out:
        out, field = Path(args.out), "--out"
    else:
        reports = Path("reports").resolve()
        out, field = Path(os.path.normpath(reports / name)), "STUDY"
        if out.parent != reports:  # belt and braces: a checked name is one plain path component
            raise ConfigError.single("STUDY", f"reports/{name} is not a folder directly inside {reports}")
    if len(studies) > 1:
        datas = build_comparison(
            studies,
            out=out,
            tracking_uri=tracking.tracking_uri(),
            sweep_run_ids=sweeps or [None] * len(studies),
            force=args.force,
            field=field,
        )
        print(f"comparison of {', '.join(d.study for d in datas)}: {out / HTML}")
        return 0
    data = build_report(
        studies[0],
        out=out,
        tracking_uri=tracking.tracking_uri(),
        sweep_run_id=sweeps[0] if sweeps else None,
        force=args.force,
        field=field,
    )
    print(f"report of study {data.study!r} (sweep {data.sweep_name}, {len(data.trials)} trials): {out / HTML}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    check_name(args.study, "STUDY")  # before MLflow is imported
    from mgm_studies.studies.status import run_status_command

    return run_status_command(args)


def cmd_train_extractor(args: argparse.Namespace) -> int:
    """Train the offline FID extractor on a run config's (labelled) image data; save it and log it to MLflow."""
    from mgm_studies import tracking
    from mgm_studies.builders import build_dataset
    from mgm_studies.config import load_run_config
    from mgm_studies.data import data_shape
    from mgm_studies.metrics.extractor import save_extractor, train_extractor, weights_hash

    check_name(args.experiment, "--experiment")  # before the extractor trains
    for name, value in (("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ConfigError.single(name, f"must be >= 1, got {value}")
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
    tags = {"mgm.kind": "extractor", "mgm.data": dataset.identity(), "mgm.weights_hash": digest}
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgm-studies", description=__doc__, epilog=EPILOG)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser(
        "train",
        help="train one run and log it to MLflow",
        epilog=EPILOG,
        description="Train one run from a YAML run config; the last line printed is the MLflow run id.",
    )
    p.add_argument("config", nargs="?", metavar="CONFIG", help="run config (YAML)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by dotted key, e.g. --set train.optimizer.lr=3e-4 (repeatable)",
    )
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run from its newest checkpoint")
    p.add_argument(
        "--experiment",
        default=os.environ.get("MLFLOW_EXPERIMENT_NAME", "mgm-studies"),
        help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME or 'mgm-studies')",
    )
    p.add_argument("--checkpoint-root", help="folder for resumable checkpoints (default ./checkpoints)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override resources.device")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_train)

    def run_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("run_id", metavar="RUN_ID", help="MLflow run id printed by `train`")
        p.add_argument("--ema", help="EMA decay to use, or 'raw' (default: the run's eval.ema)")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        p.add_argument("--seed", type=int, default=None if p.prog.endswith("evaluate") else 0, help="seed of the noise")

    p = verbs.add_parser(
        "evaluate",
        help="metrics of a finished run for each number of sampling steps",
        description="Evaluate a finished run's model on an NFE ladder; metrics are logged to "
        "that run (`kl/nfe-K`, ...) and printed.",
        epilog=EPILOG,
    )
    run_arguments(p)
    p.add_argument("--steps", help="comma-separated numbers of sampling steps (default: the run's eval.steps)")
    p.add_argument("--num-samples", type=int, help="samples per evaluation (default: the run's eval.num_samples)")
    p.set_defaults(handler=cmd_evaluate)

    p = verbs.add_parser(
        "sample",
        help="write samples of a finished run to Parquet",
        description="Sample a finished run's model; one column per data dimension (x0, x1, ...).",
        epilog=EPILOG,
    )
    run_arguments(p)
    p.add_argument("--steps", type=int, required=True, help="number of sampling steps")
    p.add_argument("--num-samples", type=int, required=True)
    p.add_argument("--out", required=True, help="output .parquet file")
    p.set_defaults(handler=cmd_sample)

    p = verbs.add_parser(
        "sweep",
        help="run a search space as a Ray Tune study, tracked in MLflow",
        description=(
            "Run the study SPACE.yaml: Ray Tune trials (Optuna, random or grid search; FIFO or ASHA), each training "
            "the run config with one set of values; one MLflow parent run per sweep and a child run per trial. "
            "Ctrl-C stops cleanly; --resume continues an interrupted sweep, re-running only unfinished trials. "
            "--set and the --*-per-trial flags override the space's base run config for every trial (checked like "
            "`train --set`, before Ray starts). A sweep is known by its study name and space hash: overrides of "
            "resources (resources.*, the --*-per-trial flags) leave the hash alone, so the same study on other "
            "hardware is the same sweep and --resume finds it; any other override changes what the trials train, "
            "so it changes the hash (a new sweep)."
        ),
    )
    p.add_argument("space", metavar="SPACE", help="search space (YAML), e.g. search_spaces/demo.yaml")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep of this space")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--storage", help="Ray Tune storage path or URI (default ./ray_results; shared on clusters)")
    p.add_argument("--experiment", help="MLflow experiment (default: the study name)")
    p.add_argument("--num-samples", type=int, help="override search.num_samples")
    p.add_argument("--max-concurrent", type=int, help="override search.max_concurrent")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the base run config for every trial, e.g. --set train.steps=2000 (repeatable; "
        "not a swept key nor train.seed)",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        metavar="X",
        help="GPUs per trial, a fraction packs trials on one GPU (e.g. 0.25); split over the trial's workers "
        "(resources.gpus_per_worker = X / workers)",
    )
    p.add_argument(
        "--cpus-per-trial",
        type=float,
        metavar="X",
        help="CPUs per trial, split over its workers (resources.cpus_per_worker)",
    )
    p.add_argument("--workers-per-trial", type=int, metavar="N", help="Ray Train workers per trial (resources.workers)")
    p.add_argument(
        "--keep-checkpoints",
        choices=["all", "unfinished"],
        default="all",
        help="Tune checkpoints to keep: all (each trial's last 2, the default), or unfinished (a finished trial's are "
        "deleted once its final model is in MLflow); a --resume keeps the sweep's first choice",
    )
    p.add_argument("--quiet", action="store_true", help="no Tune progress table")
    p.set_defaults(handler=cmd_sweep)

    p = verbs.add_parser(
        "report",
        help="write the ablation report of a study from MLflow",
        description=(
            "Read a study's newest sweep (or --sweep RUN_ID) from MLflow ($MLFLOW_TRACKING_URI) and write "
            "reports/STUDY/ (or --out DIR): results.parquet (one row per trial), report.md, index.html, figures/, "
            "and the marker file .mgm-studies-report. An existing folder there is replaced only if it is empty or "
            "holds that marker (a report written before); anything else is refused (exit 2) unless --force."
        ),
        epilog=EPILOG,
    )
    p.add_argument(
        "study",
        metavar="STUDY",
        nargs="+",
        help="study name (the search space's `name`: its MLflow experiment): 1 to 128 letters, digits, '_', '.', '-', "
        "the first a letter or digit; several studies: a comparison on their shared axes and metrics, in "
        "reports/compare-A--B",
    )
    p.add_argument(
        "--out",
        help="report folder (default reports/STUDY); an existing one is replaced only if empty or a report written "
        "before (its .mgm-studies-report marker), else refused unless --force",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace --out (or reports/STUDY) even if it is not a report written here; a symbolic link there is "
        "replaced itself, never followed",
    )
    p.add_argument(
        "--sweep",
        metavar="RUN_ID",
        action="append",
        help="the sweep's parent run id (default: the study's newest sweep); with several studies, once per study, in "
        "their order (the same study twice compares two of its sweeps)",
    )
    p.set_defaults(handler=cmd_report)

    p = verbs.add_parser(
        "status",
        help="where a study's sweep stands: trials per status, best so far, ETA",
        description=(
            "Read a study's newest sweep (or --sweep RUN_ID) from MLflow ($MLFLOW_TRACKING_URI), running or ended, "
            "and print whether it is running, finished or interrupted, its trials per status (of how many planned), "
            "the best value so far per metric with its configuration, the time elapsed and, while it runs, the ETA "
            "its driver estimates. --watch SECONDS prints it again every SECONDS until the sweep ends."
        ),
        epilog=EPILOG,
    )
    p.add_argument("study", metavar="STUDY", help="study name (the search space's `name`: its MLflow experiment)")
    p.add_argument("--sweep", metavar="RUN_ID", help="the sweep's parent run id (default: the study's newest sweep)")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until the sweep ends")
    p.set_defaults(handler=cmd_status)

    p = verbs.add_parser(
        "train-extractor",
        help="train the offline FID feature extractor on a run config's image data",
        description=(
            "Train the small classifier that scores FID offline (eval.fid.extractor: mgm-offline) on the labelled "
            "images of CONFIG's data section; write its weights (the last line printed is the file) and log them to "
            "MLflow as an artifact. Without one, runs train the same extractor on first use and cache it."
        ),
        epilog=EPILOG,
    )
    p.add_argument("config", metavar="CONFIG", help="a run config (YAML) whose data section names labelled images")
    p.add_argument("--out", help="weights file (default extractors/<data identity>.pt)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--experiment", default="mgm-studies-extractors", help="MLflow experiment of the extractor's run")
    p.set_defaults(handler=cmd_train_extractor)

    p = verbs.add_parser(
        "validate",
        help="check a run config or a search space without running anything",
        description="Validate a run config (and its data and teacher) or a search space; exit 0 if valid, 2 if not.",
    )
    p.add_argument("config", metavar="FILE", help="run config or search space (YAML)")
    p.set_defaults(handler=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print("mgm-studies: invalid input", file=sys.stderr)
        for field, message in exc.problems:
            print(f"  {field or '(config)'}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("MGM_STUDIES_DEBUG"):
            traceback.print_exc()
        print(f"mgm-studies: error: {exc}", file=sys.stderr)
        return 1
