"""MLflow for single runs: where the store is, what a run records, and a Reporter that writes it.

One run per `train`: the flattened resolved config as params, `config.json`, per-step losses, metrics per number
of sampling steps, a sample plot per number of steps, the final checkpoint, and provenance tags.
"""

from __future__ import annotations

import platform
import subprocess
import tempfile
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mgm_studies import names
from mgm_studies.config import RunConfig
from mgm_studies.loading import flatten
from mgm_studies.plots import evaluation_figures
from mgm_studies.tracking_store import open_client, sqlite_path, tracking_uri
from mgm_studies.training.device import device_tags
from mgm_studies.training.reporter import Evaluation, NullReporter

CONFIG_ARTIFACT = "config.json"
MODEL_ARTIFACT = "checkpoints/final.pt"
_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def client() -> MlflowClient:
    """The store at `tracking_uri()`: checked to answer (else a ConfigError naming MLFLOW_TRACKING_URI), its schema
    created once under a lock."""
    return open_client(tracking_uri())


# MLflow 3's UI opens an experiment on the view its kind names, and guesses the kind (often the GenAI traces view)
# when the tag is missing: ours are model-training experiments, opened on the runs table.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def experiment_id(mlflow_client: MlflowClient, name: str, *, description: str | None = None) -> str:
    """Find or create the experiment; a local SQLite store keeps its artifacts in `mlartifacts/` beside it.
    Processes that create the same new experiment at once all get its id (the losers of the race read it back).
    A new experiment is tagged as model development (the UI's runs table) and gets `description` (the UI shows it
    above the runs)."""
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    uri = mlflow_client.tracking_uri
    path = sqlite_path(uri)
    location = (path.parent / "mlartifacts").as_uri() if path is not None else None
    tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **({"mlflow.note.content": description} if description else {})}
    try:
        return mlflow_client.create_experiment(name, artifact_location=location, tags=tags)
    except MlflowException:
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def code_version() -> str:
    """The git commit of the mgm_studies source (with `-dirty` for uncommitted changes), else the package version."""
    source = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        command = ["git", "-C", str(source), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout.strip()

    try:
        return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "--", ".") else "")
    except (OSError, subprocess.SubprocessError):
        return f"mgm-studies=={_version('mgm-studies')}"


def provenance_tags(config: RunConfig, device: str | None) -> dict[str, str]:
    """A run's provenance; `device` is the one it trains on ("cpu", "cuda", "cuda:0"), recorded with its index and
    name (`training/device.py`). None for a sweep's trial, whose run is created on the driver: the trial sends its
    device tags with its results."""
    return {
        "mgm.seed": str(config.train.seed),
        names.TAG_CONFIG_HASH: config.config_hash(),
        "mgm.objective": config.objective.name,
        "mgm.data": config.data.name,
        **(device_tags(device) if device is not None else {}),
        names.TAG_CODE_VERSION: code_version(),
        "mgm.torch_version": _version("torch"),
        "mgm.ray_version": _version("ray"),
        "mgm.mlflow_version": _version("mlflow"),
        "mgm.python_version": platform.python_version(),
    }


def start_run(
    mlflow_client: MlflowClient, config: RunConfig, *, experiment: str, device: str, checkpoint_root: Path
) -> tuple[str, Path]:
    """Create the run with its params, tags and config.json; returns (run id, its checkpoint folder)."""
    run = mlflow_client.create_run(
        experiment_id(mlflow_client, experiment), run_name=config.name, tags=provenance_tags(config, device)
    )
    run_id = run.info.run_id
    checkpoint_dir = (checkpoint_root / run_id).resolve()
    log_config(mlflow_client, run_id, config)
    mlflow_client.set_tag(run_id, names.TAG_CHECKPOINT_DIR, str(checkpoint_dir))
    mlflow_client.set_tag(run_id, names.TAG_STATUS, "running")
    return run_id, checkpoint_dir


def log_config(mlflow_client: MlflowClient, run_id: str, config: RunConfig) -> None:
    """A run's config: flattened as params (100 per call), and whole as `config.json` (a plain run's and a trial's)."""
    params = [Param(k, v) for k, v in flatten(config).items()]
    for i in range(0, len(params), 100):
        mlflow_client.log_batch(run_id, params=params[i : i + 100])
    mlflow_client.log_text(run_id, config.model_dump_json(indent=2), CONFIG_ARTIFACT)


def finish_run(mlflow_client: MlflowClient, run_id: str, status: str, *, tags: Mapping[str, str] | None = None) -> None:
    """Close the run: `finished` -> FINISHED, `interrupted` and `stopped` (early, by a sweep's scheduler) -> KILLED,
    anything else (`diverged`, `error`) -> FAILED."""
    for key, value in (tags or {}).items():
        mlflow_client.set_tag(run_id, key, value)
    mlflow_client.set_tag(run_id, names.TAG_STATUS, status)
    terminal = {"finished": RunStatus.FINISHED, "interrupted": RunStatus.KILLED, "stopped": RunStatus.KILLED}.get(
        status, RunStatus.FAILED
    )
    mlflow_client.set_terminated(run_id, RunStatus.to_string(terminal))


def download(mlflow_client: MlflowClient, run_id: str, artifact: str, into: Path) -> Path:
    return Path(mlflow_client.download_artifacts(run_id, artifact, str(into)))


class MlflowReporter(NullReporter):
    """Writes what the Trainer reports into one MLflow run.

    Per-step scalars are buffered and sent with `log_batch` (1000 at a time, and before every evaluation), so
    logging every step costs a few database writes per thousand steps rather than one per step.

    A resumed run replays the steps between its checkpoint and the point where it stopped (after a SIGKILL, a
    scheduler's grace period running out, some of them were already written): `skip_logged` drops each metric's
    rows at steps the run already holds, so every step is logged once (the replay computes the same values).
    """

    def __init__(self, mlflow_client: MlflowClient, run_id: str, *, box=None, plot_prefix: str = "plots") -> None:
        self.client, self.run_id, self.box, self.plot_prefix = mlflow_client, run_id, box, plot_prefix
        self._buffer: list[Metric] = []
        self._logged_through: dict[str, int] = {}  # metric -> the last step the run already holds

    def skip_logged(self) -> None:
        """Read the last logged step of each metric (MLflow's latest value of a metric is the one at its largest
        step) and log nothing at or before it."""
        metrics = self.client.get_run(self.run_id).data.to_proto().metrics
        self._logged_through = {m.key: max(m.step, self._logged_through.get(m.key, m.step)) for m in metrics}

    def report_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        self._buffer.extend(
            Metric(key, float(value), now, step)
            for key, value in scalars.items()
            if step > self._logged_through.get(key, -1)
        )
        if len(self._buffer) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[:_BATCH], self._buffer[_BATCH:]
            self.client.log_batch(self.run_id, metrics=batch)

    def report_evaluation(self, evaluation: Evaluation) -> None:
        self.report_scalars(evaluation.step, evaluation.metrics)
        self.flush()
        for key, value in evaluation.tags.items():
            self.client.set_tag(self.run_id, key, value)
        for k, fig in evaluation_figures(evaluation, box=self.box):
            self.client.log_figure(self.run_id, fig, f"{self.plot_prefix}/step-{evaluation.step:09d}/nfe-{k}.png")

    def report_checkpoint(self, step: int, path: Path) -> None:
        self.client.set_tag(self.run_id, names.TAG_LAST_CHECKPOINT_STEP, str(step))


def log_final_model(mlflow_client: MlflowClient, run_id: str, state: dict) -> None:
    """Log the exported model (`Trainer.export()`) as `checkpoints/final.pt`."""
    from mgm_studies.exported import save_exported

    with tempfile.TemporaryDirectory() as tmp:
        path = save_exported(state, Path(tmp) / "final.pt")
        mlflow_client.log_artifact(run_id, str(path), "checkpoints")
