"""Every name that more than one module uses, defined once: the study-name rule, MLflow tags, run statuses, the keys
of a trial's Ray results, sentinels, and how metric names are built and parsed.

Dependency-free on purpose (like Ray Tune's `tune/result.py`): whoever writes or reads a name imports it from here,
and a reader that only reads results (the report) never imports the training stack.

Study and experiment names (a search space's `name`, `--experiment` of `train`, `train-extractor` and `sweep`, and
`report STUDY`): a name becomes an MLflow experiment, a Ray Tune folder (`<storage>/<name>-<hash>`) and the report
folder `reports/<name>`, so it must be a single, plain path component: 1 to 128 characters, ASCII letters, digits,
`_`, `.` and `-`, the first a letter or a digit. That leaves out path separators (`/`, `\\`), `.` and `..`, hidden
names, whitespace and control characters, and names that read as command-line options (`-x`).
"""

from __future__ import annotations

import re

from mgm_studies.configbase import ConfigError

MAX_NAME_LENGTH = 128
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
NAME_RULE = (
    f"1 to {MAX_NAME_LENGTH} characters from ASCII letters, digits, '_', '.' and '-', the first a letter or digit "
    f"(pattern {NAME_PATTERN})"
)
_NAME = re.compile(NAME_PATTERN)
_SHOWN = 200  # characters of a refused value quoted back


def name_problem(value: object) -> str | None:
    """What is wrong with `value` as a study or experiment name, or None if it is one."""
    if not isinstance(value, str):
        return f"a name is a string of {NAME_RULE}"
    # fullmatch, not match: Python's `$` also matches before a trailing newline.
    if _NAME.fullmatch(value) is None:
        return f"expected a name of {NAME_RULE}"
    return None


def check_name(value: str, field: str) -> str:
    """`value` if it is a valid name; otherwise a ConfigError on `field` quoting (at most 200 characters of) it."""
    problem = name_problem(value)
    if problem is None:
        return value
    shown = repr(value[:_SHOWN]) if isinstance(value, str) else type(value).__name__
    if isinstance(value, str) and len(value) > _SHOWN:
        shown += f"... ({len(value)} characters)"
    raise ConfigError.single(field, f"{problem}, got {shown}")


# ---------------------------------------------------------------------- MLflow tags, params and live metrics
# A run's status (STATUSES), and the same key in a trial's Ray results (`training/ray_train.py`, read by the sweep's
# MLflow callback): one key, so a trial's status reads the same in Ray Tune's result files and in MLflow.
TAG_STATUS = "mgm.status"
TAG_KIND = "mgm.kind"  # KIND_SWEEP on a sweep's parent run, KIND_TRIAL on its children, "extractor"
KIND_SWEEP, KIND_TRIAL = "sweep", "trial"
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own: a trial's sweep parent run
TAG_SWEEP = "mgm.sweep"  # the sweep's name (study name + space hash), on the parent and every child
TAG_TRIAL = "mgm.trial_id"  # a child's Ray Tune trial id (how a resumed sweep finds its child again)
TAG_TRIAL_PARAMS = "mgm.trial_params"  # a child's axis labels (JSON)
TAG_CLAIMS = "mgm.claims"  # the parent's: the space's claims (JSON), read by the report
TAG_OVERRIDES = "mgm.overrides"  # the parent's: this attempt's --set and resource flags (JSON list)
TAG_RESOURCES = "mgm.resources"  # the parent's: the trials' resources section (JSON), this attempt
TAG_ERROR = "mgm.error"  # a failed run's error (its last 5000 characters)
TAG_DIVERGED_STEP = "mgm.diverged_step"
TAG_LAST_STEP = "mgm.last_step"  # a child's step of its last result
TAG_CHECKPOINT_DIR = "mgm.checkpoint_dir"  # a `train` run's checkpoint folder (what `--resume` continues from)
TAG_LAST_CHECKPOINT_STEP = "mgm.last_checkpoint_step"
TAG_CONFIG_HASH = "mgm.config_hash"  # how a teacher run is found by its config
TAG_CODE_VERSION = "mgm.code_version"  # the git commit (or package version) a run or sweep ran
TAG_LIVE_ETA, TAG_LIVE_UPDATED = "mgm.live.eta", "mgm.live.updated"  # the parent's live view (`studies/live.py`)
METRIC_ETA = "live/eta_s"
PARAM_PLANNED = "trials.planned"  # the parent's: how many trials the sweep asks Tune for

# ---------------------------------------------------------------------- statuses
# The values of TAG_STATUS: running, then how a run ended: finished, diverged (a loss or gradient norm not finite),
# stopped (early, by a sweep's scheduler), error, interrupted (Ctrl-C, SIGTERM: `--resume` continues it).
STATUSES = ("running", "finished", "diverged", "stopped", "error", "interrupted")
DONE = ("finished", "diverged", "stopped", "error")  # a trial that will not run again

# ---------------------------------------------------------------------- a trial's Ray results
# The keys a trial sends to Ray Tune besides its metrics (`training/ray_train.py` writes them, the sweep's MLflow
# callback reads them), and the files of the checkpoint folder sent with each result.
STEP = "step"
TOTAL_STEPS = "mgm/total_steps"
FINAL = "mgm/final"
SCALARS = "mgm/scalars"
TAGS = "mgm/tags"  # what the metrics mean (FID provenance), set as tags of the trial's MLflow run
EVALUATED = "mgm/evaluated"  # the names of the evaluation's metrics (objective checks included), logged to MLflow
CHECKPOINT_FILE, META_FILE, FINAL_FILE, SAMPLES_FILE = "trainer.pt", "meta.json", "final.pt", "samples.pt"
DIVERGED_VALUE = 1.0e12  # what a diverged trial reports for each metric to minimise (its negative to maximise)

# ---------------------------------------------------------------------- metric names
SEED = "train.seed"  # the config key of a run's seed: set by a space's `seeds`, a column of the trial table
LOSS = "loss"  # every run's per-step training loss (per phase: `loss/<phase>`); an objective adds its own
# `<family>/nfe-<K>`: a quality metric (or counter) measured after K sampling steps, the one name it has in Tune,
# MLflow and reports (platform.md).
EVAL_METRIC = re.compile(r"(?P<family>[a-z0-9_]+)/nfe-(?P<k>[0-9]+)")
AREA_PREFIX = "area_"  # `area_<family>/nfe-K`: the convergence speed of `<family>/nfe-K` (`convergence.py`)
COUNTERS = ("fevals",)  # per-NFE counters (network evaluations per sample), not quality: no area, no table column


def eval_metric(family: str, k: int) -> str:
    """The name of `family` measured after `k` sampling steps: `kl/nfe-4`."""
    return f"{family}/nfe-{k}"


def parse_eval_metric(name: str) -> tuple[str, int] | None:
    """(family, K) of an evaluation metric's name (`area_kl/nfe-4` -> ("area_kl", 4)); None for any other name."""
    match = EVAL_METRIC.fullmatch(name)
    return None if match is None else (match["family"], int(match["k"]))


def area_metric(metric: str) -> str:
    """The convergence-speed metric of `metric`: `area_kl/nfe-4` for `kl/nfe-4`."""
    return AREA_PREFIX + metric
