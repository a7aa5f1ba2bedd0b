"""Sample plots (matplotlib, headless), one figure per number of steps: generated samples against data (vectors),
or a grid of generated images."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes or CI
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from mgm_studies.data import HistogramSpec
from mgm_studies.names import eval_metric

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


def image_grid_figure(samples: Tensor, *, title: str, columns: int = 8) -> Figure:
    """A grid of images (N, C, H, W) with values in [-1, 1] (C = 1: grey, C = 3: RGB), at most columns^2 of them."""
    images = ((samples[: columns * columns].float().clamp(-1, 1) + 1) / 2).numpy()
    n, c, h, w = images.shape
    rows = -(-n // columns)
    canvas = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1, c), dtype=np.float32)
    for i in range(n):
        top, left = 1 + (i // columns) * (h + 1), 1 + (i % columns) * (w + 1)
        canvas[top : top + h, left : left + w] = images[i].transpose(1, 2, 0)
    fig, ax = plt.subplots(figsize=(4.2, 4.2 * canvas.shape[0] / canvas.shape[1] + 0.3), dpi=100)
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def evaluation_figures(evaluation: Evaluation, *, box: HistogramSpec | None = None) -> Iterator[tuple[int, Figure]]:
    """One figure per number of sampling steps K of an evaluation (samples over its reference draw, titled with K,
    the training step and the KL when measured); each is closed once the caller moves on. None without a reference."""
    if evaluation.reference is None:
        return
    for k, samples in evaluation.samples.items():
        title = f"{k} step{'s' if k > 1 else ''}, training step {evaluation.step}"
        if samples.dim() == 4:  # images: a grid of samples
            fid = evaluation.metrics.get(eval_metric("fid", k))
            fig = image_grid_figure(samples, title=title + (f", FID {fid:.2f}" if fid is not None else ""))
        else:
            kl = evaluation.metrics.get(eval_metric("kl", k))
            fig = samples_figure(
                samples, evaluation.reference, title=title + (f", KL {kl:.3f}" if kl is not None else ""), box=box
            )
        try:
            yield k, fig
        finally:
            plt.close(fig)
