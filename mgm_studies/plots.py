"""Sample plots (matplotlib, headless): generated samples against data, one figure per number of steps."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes or CI
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from mgm_studies.data import HistogramSpec

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
