"""The verbs on a study (a search space): `sweep` it on Ray Tune, see its `status`, write its `report`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mgm_studies.cli.arguments import add_verb, at_least, name, overrides
from mgm_studies.configbase import ConfigError
from mgm_studies.names import check_name


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the study SPACE.yaml: Ray Tune trials (Optuna, random or grid search; FIFO or ASHA), each training the run
    config with one set of values; one MLflow parent run per sweep and a child run per trial. Ctrl-C stops cleanly;
    --resume continues an interrupted sweep, re-running only unfinished trials. --set and the --*-per-trial flags
    override the space's base run config for every trial (checked like `train --set`, before Ray starts). A sweep is
    known by its study name and space hash: overrides of resources (resources.*, the --*-per-trial flags) leave the
    hash alone, so the same study on other hardware is the same sweep and --resume finds it; any other override
    changes what the trials train, so it changes the hash (a new sweep)."""
    from mgm_studies.studies.overrides import sweep_overrides
    from mgm_studies.studies.space import load_study_spec

    overrides = sweep_overrides(
        args.set,
        gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial,
        workers_per_trial=args.workers_per_trial,
    )
    study = load_study_spec(args.space, overrides)  # every override checked here, before Ray is imported
    from mgm_studies.studies.sweep import print_outcome, run_sweep

    outcome = run_sweep(
        study,
        overrides=[override.shown() for override in overrides],
        resume=args.resume,
        address=args.address,
        storage=args.storage,
        experiment=args.experiment,
        num_samples=args.num_samples,
        max_concurrent=args.max_concurrent,
        verbose=0 if args.quiet else 1,
        keep_checkpoints=args.keep_checkpoints,
    )
    return print_outcome(outcome, args.space)


def cmd_status(args: argparse.Namespace) -> int:
    """Read a study's newest sweep (or --sweep RUN_ID) from MLflow ($MLFLOW_TRACKING_URI), running or ended, and print
    whether it is running, finished or interrupted, its trials per status (of how many planned), the best value so
    far per metric with its configuration, the time elapsed and, while it runs, the ETA its driver estimates. --watch
    SECONDS prints it again every SECONDS until the sweep ends."""
    from mgm_studies.studies.status import run_status_command

    return run_status_command(args)


def cmd_report(args: argparse.Namespace) -> int:
    """Read a study's newest sweep (or --sweep RUN_ID) from MLflow ($MLFLOW_TRACKING_URI) and write reports/STUDY/ (or
    --out DIR): results.parquet (one row per trial), report.md, index.html, figures/, and the marker file
    .mgm-studies-report. An existing folder there is replaced only if it is empty or holds that marker (a report
    written before); anything else is refused (exit 2) unless --force."""
    studies, sweeps = args.study, args.sweep or []
    if sweeps and len(sweeps) != len(studies):
        raise ConfigError.single("--sweep", f"give one --sweep per study ({len(studies)}) or none, got {len(sweeps)}")
    from mgm_studies import tracking
    from mgm_studies.reporting.build import HTML, build_report
    from mgm_studies.reporting.compare import build_comparison, default_name

    folder = studies[0] if len(studies) == 1 else check_name(default_name(studies), "STUDY (the comparison's folder)")
    if args.out:
        out, field = Path(args.out), "--out"
    else:
        reports = Path("reports").resolve()
        out, field = Path(os.path.normpath(reports / folder)), "STUDY"
        if out.parent != reports:  # belt and braces: a checked name is one plain path component
            raise ConfigError.single("STUDY", f"reports/{folder} is not a folder directly inside {reports}")
    options = dict(out=out, tracking_uri=tracking.tracking_uri(), force=args.force, field=field)
    if len(studies) > 1:
        datas = build_comparison(studies, sweep_run_ids=sweeps or [None] * len(studies), **options)
        print(f"comparison of {', '.join(d.study for d in datas)}: {out / HTML}")
        return 0
    data = build_report(studies[0], sweep_run_id=sweeps[0] if sweeps else None, **options)
    print(f"report of study {data.study!r} (sweep {data.sweep_name}, {len(data.trials)} trials): {out / HTML}")
    return 0


def add_verbs(verbs: argparse._SubParsersAction) -> None:
    p = add_verb(verbs, cmd_sweep, "run a search space as a Ray Tune study, tracked in MLflow", epilog=None)
    p.add_argument("space", metavar="SPACE", help="search space (YAML), e.g. search_spaces/demo.yaml")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep of this space")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--storage", help="Ray Tune storage path or URI (default ./ray_results; shared on clusters)")
    p.add_argument("--experiment", type=name, help="MLflow experiment (default: the study name)")
    p.add_argument("--num-samples", type=at_least(1), help="override search.num_samples")
    p.add_argument("--max-concurrent", type=at_least(1), help="override search.max_concurrent")
    overrides(
        p,
        "override a value of the base run config for every trial, e.g. --set train.steps=2000 (repeatable; not a "
        "swept key nor train.seed)",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        metavar="X",
        help="GPUs per trial, a fraction packs trials on one GPU (e.g. 0.25); split over the trial's workers "
        "(resources.gpus_per_worker = X / workers)",
    )
    cpus = "CPUs per trial, split over its workers (resources.cpus_per_worker)"
    p.add_argument("--cpus-per-trial", type=float, metavar="X", help=cpus)
    p.add_argument("--workers-per-trial", type=int, metavar="N", help="Ray Train workers per trial (resources.workers)")
    p.add_argument(
        "--keep-checkpoints",
        choices=["all", "unfinished"],
        default="all",
        help="Tune checkpoints to keep: all (each trial's last 2, the default), or unfinished (a finished trial's are "
        "deleted once its final model is in MLflow); a --resume keeps the sweep's first choice",
    )
    p.add_argument("--quiet", action="store_true", help="no Tune progress table")

    study = "study name (the search space's `name`: its MLflow experiment)"
    p = add_verb(verbs, cmd_status, "where a study's sweep stands: trials per status, best so far, ETA")
    p.add_argument("study", type=name, metavar="STUDY", help=study)
    p.add_argument("--sweep", metavar="RUN_ID", help="the sweep's parent run id (default: the study's newest sweep)")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until the sweep ends")

    p = add_verb(verbs, cmd_report, "write the ablation report of a study from MLflow")
    p.add_argument(
        "study",
        type=name,
        metavar="STUDY",
        nargs="+",
        help=f"{study}: 1 to 128 letters, digits, '_', '.', '-', the first a letter or digit; several studies: a "
        "comparison on their shared axes and metrics, in reports/compare-A--B",
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
