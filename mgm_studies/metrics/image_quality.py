"""FID (and KID) of generated images on the NFE ladder, as evaluation computes them (platform.md, "FID").

- The extractor is `eval.fid.extractor`: `mgm-offline` (a small classifier, `metrics/extractor.py`) or torch-fidelity's
  `inception-v3-compat`. Offline weights are `eval.fid.weights`, or, when left out, trained once on the dataset's own
  labelled images (seed 0) and cached under the cache folder by the dataset's identity: every run on the same data
  then scores with the same extractor, and its weights hash is in the provenance.
- The reference set is a fixed subset of the data (`eval.fid.reference_size` images drawn with seed 0; all by
  default); its statistics (and features, for KID) are cached once per (reference, extractor) in the cache folder as
  `.npz` files read without pickle (`metrics/fid.py`).
- Cache folder: `eval.fid.cache_dir`, else `$MGM_STUDIES_CACHE`, else `~/.cache/mgm-studies`. Offline extractor
  weights under it are read with `torch.load(weights_only=True)`. Keep it a folder only you can write: it decides
  which reference statistics and extractor a run is scored with.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from mgm_studies.configbase import ConfigError

OFFLINE_STEPS = 600  # the offline extractor's training: ~0.99 held-out accuracy on 8x8 digits in a few seconds
REFERENCE_SEED = 0


def cache_folder(configured: str | None) -> Path:
    return Path(configured or os.environ.get("MGM_STUDIES_CACHE") or Path.home() / ".cache" / "mgm-studies")


def offline_weights(dataset, cache: Path) -> Path:
    """The offline extractor of `dataset` (an ImageDataset with labels): trained once, then read from the cache."""
    from mgm_studies.metrics.extractor import save_extractor, train_extractor

    path = cache / "extractors" / f"{dataset.identity()}.pt"
    if path.is_file():
        return path
    if dataset.labels is None:
        raise ConfigError.single(
            "eval.fid.weights",
            f"data {dataset.name!r} has no labels to train the offline extractor on: give trained weights, or use "
            "extractor: inception-v3-compat",
        )
    with torch.random.fork_rng(devices=[]):  # the run's own random streams stay untouched
        payload = train_extractor(dataset.images, dataset.labels, steps=OFFLINE_STEPS, batch_size=64, seed=0, lr=2e-3)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    save_extractor(payload, partial)
    try:  # the first writer wins and its file is never replaced: runs that already score with it keep doing so
        os.link(partial, path)
    except FileExistsError:
        pass
    finally:
        partial.unlink()
    return path


class ImageQuality:
    """FID / KID of image samples (N, C, H, W) in [-1, 1] against the run's reference set; one per evaluation."""

    def __init__(self, dataset, options, metrics: list[str], device: torch.device) -> None:
        from mgm_studies.metrics.fid import ExtractorSpec

        self.dataset, self.metrics = dataset, metrics
        self.cache = cache_folder(options.cache_dir)
        weights = options.weights
        if options.extractor == "mgm-offline" and weights is None:
            weights = str(offline_weights(dataset, self.cache))
        self.extractor = ExtractorSpec(name=options.extractor, weights_path=weights)
        size = options.reference_size or len(dataset)
        reference = dataset.reference(size, torch.Generator().manual_seed(REFERENCE_SEED))
        self.reference = dataset.to_uint8(reference)
        self.reference_id = f"{dataset.identity()}-ref{len(self.reference)}-seed{REFERENCE_SEED}"
        self.device = "cuda" if device.type == "cuda" else "cpu"

    def __call__(self, samples: Tensor) -> dict[str, float]:
        """{"fid": ..., "kid": ... (when asked)} of `samples` (N, C, H, W) floats in [-1, 1]."""
        from mgm_studies.metrics.fid import fid_metrics

        values = fid_metrics(
            self.dataset.to_uint8(samples.float()),
            self.reference,
            reference_id=self.reference_id,
            extractor=self.extractor,
            cache_dir=self.cache,
            kid="kid" in self.metrics,
            device=self.device,
        )
        return {name: float(values[name]) for name in ("fid", "kid") if name in self.metrics}

    def provenance(self, num_samples: int) -> dict[str, str]:
        """Tags that say what an FID value means (extractor and weights hash, reference set and size, samples)."""
        from mgm_studies.metrics.fid import provenance

        return provenance(self.extractor, self.reference_id, len(self.reference), num_samples)
