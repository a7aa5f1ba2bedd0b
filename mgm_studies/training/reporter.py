"""The seam between the Trainer and whoever records its progress (MLflow, Ray Tune, Ray Train, nobody).

The Trainer never imports Ray or MLflow: it is handed a Reporter. Ray's `tune.report` and `train.report` are not
interchangeable (platform.md), so each executor brings its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from torch import Tensor


@dataclass
class Evaluation:
    """Metrics of one evaluation (`kl/nfe-4`, ...) and the samples behind them, keyed by sampling steps."""

    step: int
    metrics: dict[str, float]
    samples: dict[int, Tensor] = field(default_factory=dict)  # steps K -> (N, *data_shape) on CPU
    reference: Tensor | None = None  # (M, *data_shape) data drawn for comparison
    tags: dict[str, str] = field(default_factory=dict)  # what the metrics mean (FID: extractor, reference, ...)


class Reporter(Protocol):
    def report_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Per-step training scalars (`loss`, diagnostics) of optimiser step `step` (1-based)."""

    def report_evaluation(self, evaluation: Evaluation) -> None:
        """Metrics per number of sampling steps, with the samples they were computed on."""

    def report_checkpoint(self, step: int, path: Path) -> None:
        """A resumable checkpoint was written at `path` after step `step`."""

    def report_peer_evaluation(self, step: int) -> None:
        """On ranks other than 0, where rank 0 reports an evaluation: Ray Train's report is a collective that every
        rank must join the same number of times."""


class NullReporter:
    """Records nothing: plain runs in tests and benchmarks."""

    def report_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        pass

    def report_evaluation(self, evaluation: Evaluation) -> None:
        pass

    def report_checkpoint(self, step: int, path: Path) -> None:
        pass

    def report_peer_evaluation(self, step: int) -> None:
        pass


class RecordingReporter(NullReporter):
    """Keeps everything in memory; for tests and notebooks."""

    def __init__(self) -> None:
        self.scalars: dict[int, dict[str, float]] = {}
        self.evaluations: list[Evaluation] = []
        self.checkpoints: list[tuple[int, Path]] = []

    def report_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self.scalars[step] = dict(scalars)

    def report_evaluation(self, evaluation: Evaluation) -> None:
        self.evaluations.append(evaluation)

    def report_checkpoint(self, step: int, path: Path) -> None:
        self.checkpoints.append((step, path))
