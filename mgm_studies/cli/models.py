"""The verbs on a finished run's model: `evaluate` it on an NFE ladder (logged to that run) and `sample` it to
Parquet."""

from __future__ import annotations

import argparse

from mgm_studies.cli.arguments import add_verb, at_least, device, ema, naming, parquet, print_metrics, steps


def _load_run_model(args: argparse.Namespace):
    """(a client of the store, the model run RUN_ID exported, with --ema's weights, on --device)."""
    from mgm_studies.api import load_run

    chosen = "config" if args.ema is None else (None if args.ema == "raw" else args.ema)
    with naming({"run_id": "RUN_ID", "ema": "--ema"}):
        return load_run(args.run_id, ema=chosen, device=device(args.device))


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a finished run's model on an NFE ladder; metrics are logged to that run (`kl/nfe-K`, ...) and
    printed."""
    import torch

    from mgm_studies import tracking
    from mgm_studies.evaluation import evaluate

    client, run = _load_run_model(args)
    evaluation = evaluate(
        run.model,
        run.objective,
        run.dataset,
        run.config.eval,
        step=run.step,
        device=torch.device(device(args.device)),
        steps=args.steps,
        num_samples=args.num_samples,
        seed=args.seed,
        progress=True,
    )
    tracking.MlflowReporter(
        client, args.run_id, box=run.dataset.histogram, plot_prefix="plots/evaluate"
    ).report_evaluation(evaluation)
    print(f"run {args.run_id}, step {run.step}, EMA {run.ema if run.ema is not None else 'raw'}")
    print_metrics(evaluation.metrics)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample a finished run's model; one column per data dimension (x0, x1, ...)."""
    import torch

    from mgm_studies.data import data_shape
    from mgm_studies.sample_file import check_disk, claim_out, write_samples

    partial = claim_out(args.out)  # --out is proved writable before the model is loaded
    try:
        _, run = _load_run_model(args)
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
            device=torch.device(device(args.device)),
        )
        partial.replace(args.out)  # never a half-written file under the requested name
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    print(f"wrote {args.num_samples} samples ({args.steps} steps, {nfe} function evaluations) to {args.out}")
    return 0


def add_verbs(verbs: argparse._SubParsersAction) -> None:
    def run_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("run_id", metavar="RUN_ID", help="MLflow run id printed by `train`")
        p.add_argument("--ema", type=ema, help="EMA decay to use, or 'raw' (default: the run's eval.ema)")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        p.add_argument("--seed", type=int, default=None if p.prog.endswith("evaluate") else 0, help="seed of the noise")

    p = add_verb(verbs, cmd_evaluate, "metrics of a finished run for each number of sampling steps")
    run_arguments(p)
    p.add_argument(
        "--steps", type=steps, help="comma-separated numbers of sampling steps (default: the run's eval.steps)"
    )
    p.add_argument(
        "--num-samples", type=at_least(2), help="samples per evaluation (default: the run's eval.num_samples)"
    )

    p = add_verb(verbs, cmd_sample, "write samples of a finished run to Parquet")
    run_arguments(p)
    p.add_argument("--steps", type=at_least(1), required=True, help="number of sampling steps")
    p.add_argument("--num-samples", type=at_least(1), required=True)
    p.add_argument("--out", type=parquet, required=True, help="output .parquet file")
