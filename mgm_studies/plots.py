"""Sample plots (matplotlib, headless): generated samples against data, one figure per number of steps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes or CI
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from mgm_studies.data import HistogramSpec

if TYPE_CHECKING:
    from mgm_studies.training.reporter import Evaluation

_MAX_POINTS = 5000  # enough to see the law; more only slows the PNG down


def samples_figure(samples: Tensor, reference: Tensor, *, title: str, box: HistogramSpec | None = None) -> Figure:
    """Scatter (2-D and up: the first two coordinates) or histogram (1-D) of samples over reference data."""
    samples, reference = samples[:_MAX_POINTS].numpy(), reference[:_MAX_POINTS].numpy()
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=100)
    if samples.shape[1] == 1:
        ax.hist(reference[:, 0], bins=60, alpha=0.5, density=True, label="data", color="tab:gray")
        ax.hist(samples[:, 0], bins=60, alpha=0.5, density=True, label="samples", color="tab:blue")
    else:
        ax.scatter(reference[:, 0], reference[:, 1], s=1, alpha=0.35, label="data", color="tab:gray")
        ax.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.35, label="samples", color="tab:blue")
        if box is not None:
            ax.set_xlim(box.low[0], box.high[0])
            ax.set_ylim(box.low[1], box.high[1])
        ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8, markerscale=6)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)


def evaluation_figures(evaluation: Evaluation, *, box: HistogramSpec | None = None) -> Iterator[tuple[int, Figure]]:
    """One figure per number of sampling steps K of an evaluation (samples over its reference draw, titled with K,
    the training step and the KL when measured); each is closed once the caller moves on. None without a reference."""
    if evaluation.reference is None:
        return
    for k, samples in evaluation.samples.items():
        kl = evaluation.metrics.get(f"kl/nfe-{k}")
        title = f"{k} step{'s' if k > 1 else ''}, training step {evaluation.step}"
        fig = samples_figure(
            samples, evaluation.reference, title=title + (f", KL {kl:.3f}" if kl is not None else ""), box=box
        )
        try:
            yield k, fig
        finally:
            close(fig)
