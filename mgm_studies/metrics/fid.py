"""FID (and KID, precision/recall) of generated images through torch-fidelity, with cached reference statistics.

One pinned implementation: every number comes from torch-fidelity's own functions (style guide: "two FID pipelines
that disagree"): its feature extraction (`get_featuresdict_from_dataset`), `fid_features_to_statistics`,
`fid_statistics_to_metric`, `kid_features_to_metric` and `prc_features_to_metric`, the steps its
`calculate_metrics` takes, so the values equal `calculate_metrics(..., cache=False)` on the same inputs. This module
picks the extractor, keeps the reference's cache entry, and `provenance` gives the tags to log with each value.

Reference cache, without pickles. torch-fidelity's own cache (`cache=True`) writes and reads `.pt` pickles with
`torch.load(weights_only=False)`, so it is not used. This module caches the reference's FID statistics as
`<cache_dir>/<name>-<extractor>-stat-fid-<layer>.npz` {"mu": (D,), "sigma": (D, D)} and its features as
`<name>-<extractor>-features-<layer>.npz` {"features": (M, D)} (KID and precision/recall need them), written
atomically (temporary file, then `os.replace`) and read with `numpy.load(allow_pickle=False)`; an unreadable or
inconsistent entry is recomputed, and `.pt` files of the old format are never read. The name is
`reference_cache_key(...)`, a hash of the reference id and shape, the extractor, its weights hash and the feature
layer, so that new weights or another reference never reuse stale statistics. On a hit for FID alone the reference
is not read at all: the id, not the tensor, names the reference set, so give each distinct set (or subset, or seed)
its own id. The generated samples are never cached.

Extractors (`ExtractorSpec.name`), built by `metrics.extractor.feature_extractor` once per weights file version:
- "mgm-offline": `metrics.extractor`'s small classifier; `weights_path` (required) is a file from `save_extractor`
  trained on images of the same (C, H, W), read with `weights_only=True`.
- "inception-v3-compat": torch-fidelity's TF-ported Inception-v3, pool3 (2048 features). With `weights_path=None`
  the file is torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` in `$TORCH_HOME/hub/checkpoints/`,
  downloaded if absent (copy it there on offline machines); or give the path of a local copy. The file must load with
  `torch.load(weights_only=True)` (a plain tensor state dict), else a ConfigError on `eval.fid.weights`; torch-fidelity
  is handed only our re-saved copy of it. 1-channel images are repeated to 3 channels for it.

Trust. The cache folder still decides which statistics a run is scored against, and the sweep `--storage` folder
holds Ray Tune's `tuner.pkl`, which `sweep --resume` unpickles: neither may be a folder that others can write.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import model_validator
from torch import Tensor, nn
from torch.utils.data import Dataset

from mgm_studies.configbase import StrictModel
from mgm_studies.metrics.extractor import (
    FEATURE_LAYER,
    INCEPTION_DEFAULT_WEIGHTS,
    INCEPTION_NAME,
    OFFLINE_EXTRACTOR_NAME,
    feature_extractor,
    weights_hash,
)

RNG_SEED = 2020  # torch-fidelity's seed for KID subsets; fixed so KID is reproducible
KID_SUBSET_SIZE = 1000  # torch-fidelity's default, lowered to min(N, M) for smaller sets
_FEATURE_LAYERS = {OFFLINE_EXTRACTOR_NAME: FEATURE_LAYER, INCEPTION_NAME: "2048"}


class ExtractorSpec(StrictModel):
    """Which feature extractor FID uses, and its weights (see the module docstring).

    Attributes:
        name: "mgm-offline" or "inception-v3-compat".
        weights_path: the weights file; required for "mgm-offline", optional for Inception (None: torch-fidelity's
            cached download).
    """

    name: Literal["mgm-offline", "inception-v3-compat"]
    weights_path: str | None = None

    @model_validator(mode="after")
    def _offline_needs_weights(self) -> ExtractorSpec:
        if self.name == OFFLINE_EXTRACTOR_NAME and self.weights_path is None:
            raise ValueError("the mgm-offline extractor needs weights_path (a file written by save_extractor)")
        return self

    @property
    def feature_layer(self) -> str:
        """The layer FID, KID and precision/recall use: "feat" (offline) or "2048" (Inception pool3)."""
        return _FEATURE_LAYERS[self.name]

    def weights_id(self) -> str:
        """`weights_hash` of the weights file, or the name of torch-fidelity's default Inception weights."""
        return INCEPTION_DEFAULT_WEIGHTS if self.weights_path is None else weights_hash(self.weights_path)


def reference_cache_key(reference_id: str, extractor: ExtractorSpec, reference_shape: Sequence[int]) -> str:
    """The cache name of a reference set: "<readable id>-<16 hex>", the hex a sha256 of the id, the (M, C, H, W)
    shape, the extractor name, its weights id and its feature layer."""
    identity = {
        "reference_id": reference_id,
        "reference_shape": [int(v) for v in reference_shape],
        "extractor": extractor.name,
        "weights": extractor.weights_id(),
        "feature_layer": extractor.feature_layer,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", reference_id)[:48]
    return f"{readable}-{digest}"


class _Images(Dataset):
    """A Dataset over uint8 (N, C, H, W) images, each item a (C, H, W) uint8 tensor as torch-fidelity expects."""

    def __init__(self, images: Tensor):
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


def _check_images(name: str, images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 2:
        raise ValueError(
            f"{name} must be uint8 (N, C, H, W) images with C in (1, 3) and N >= 2, got {images.dtype} "
            f"{tuple(images.shape)}; convert [-1, 1] floats x as round((x + 1) * 127.5)"
        )


def _read_npz(path: Path, expected: dict[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray] | None:
    """The arrays of a cache entry if it reads without pickle and each has its expected (shape, dtype), else None (a
    miss: the entry is recomputed and replaced)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in expected}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if any((arrays[name].shape, arrays[name].dtype) != want for name, want in expected.items()):
        return None
    return arrays


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz atomically: readers see the old entry or the whole new one, never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def fid_metrics(
    samples: Tensor,
    reference: Tensor,
    *,
    reference_id: str,
    extractor: ExtractorSpec,
    cache_dir: Path,
    kid: bool = False,
    prc: bool = False,
    device: str = "cpu",
    batch_size: int = 256,
) -> dict[str, float]:
    """FID of `samples` against `reference` (and KID, precision/recall), with torch-fidelity's functions.

    Args:
        samples: (N, C, H, W) uint8 generated images, C in (1, 3), any device (moved to the CPU for loading).
        reference: (M, C', H', W') uint8 real images with (C', H', W') = (C, H, W); only read on a cache miss.
        reference_id: names the reference set in the statistics cache (see the module docstring).
        extractor: which feature extractor and weights.
        cache_dir: where the reference statistics and features are cached (.npz).
        kid: add "kid" and "kid_std" (polynomial-kernel MMD^2, 100 subsets of min(1000, N, M) images, seed 2020;
            below 1000 images every subset is the whole set, so "kid_std" is about 0).
        prc: add "precision" and "recall" (k = 3 nearest neighbours, Kynkäänniemi et al. 2019).
        device: "cpu" or "cuda" (torch-fidelity's current CUDA device).
    Returns:
        {"fid": ..., and "kid", "kid_std", "precision", "recall" when asked}, plain floats.
    """
    _check_images("samples", samples)
    _check_images("reference", reference)
    if samples.shape[1:] != reference.shape[1:]:
        raise ValueError(f"samples {tuple(samples.shape)} and reference {tuple(reference.shape)} differ in (C, H, W)")
    if device not in ("cpu", "cuda"):
        raise ValueError(f'device must be "cpu" or "cuda", got {device!r}')
    # torch_fidelity imports torchvision: only when FID is computed
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    layer = extractor.feature_layer
    net = feature_extractor(extractor.name, extractor.weights_path, layer, device)
    stem = Path(cache_dir) / f"{reference_cache_key(reference_id, extractor, reference.shape)}-{extractor.name}"
    stats_path, features_path = Path(f"{stem}-stat-fid-{layer}.npz"), Path(f"{stem}-features-{layer}.npz")
    rgb = extractor.name == INCEPTION_NAME
    sample_features = _features(samples, net, layer, rgb, device, batch_size)
    sample_stats = fid_features_to_statistics(sample_features)
    mu, sigma = sample_stats["mu"], sample_stats["sigma"]
    reference_stats = _read_npz(stats_path, {"mu": (mu.shape, mu.dtype), "sigma": (sigma.shape, sigma.dtype)})
    reference_features = None
    if reference_stats is None or kid or prc:
        shape = (len(reference), sample_features.shape[1])
        cached = _read_npz(features_path, {"features": (shape, sample_features.numpy().dtype)})
        if cached is not None:
            reference_features = torch.from_numpy(cached["features"])
        else:
            reference_features = _features(reference, net, layer, rgb, device, batch_size)
            _write_npz(features_path, features=reference_features.numpy())
    if reference_stats is None:
        reference_stats = fid_features_to_statistics(reference_features)
        _write_npz(stats_path, **reference_stats)
    out = {"fid": float(fid_statistics_to_metric(sample_stats, reference_stats, False)[KEY_METRIC_FID])}
    # samples are input1 and the reference input2, as calculate_metrics(input1=samples, input2=reference) has them
    if kid:
        from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

        size = min(KID_SUBSET_SIZE, len(samples), len(reference))
        raw = kid_features_to_metric(
            sample_features, reference_features, kid_subset_size=size, rng_seed=RNG_SEED, verbose=False
        )
        out["kid"], out["kid_std"] = float(raw[KEY_METRIC_KID_MEAN]), float(raw[KEY_METRIC_KID_STD])
    if prc:
        from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

        raw = prc_features_to_metric(sample_features, reference_features, save_cpu_ram=True, verbose=False)
        out["precision"], out["recall"] = float(raw[KEY_METRIC_PRECISION]), float(raw[KEY_METRIC_RECALL])
    return out


def _features(images: Tensor, net: nn.Module, layer: str, rgb: bool, device: str, batch_size: int) -> Tensor:
    """(N, D) float features of uint8 images through torch-fidelity's own loop (its batching and device moves);
    `rgb`: repeat 1-channel images to 3 channels (Inception reads RGB)."""
    from torch_fidelity.utils import get_featuresdict_from_dataset

    images = images.detach().cpu()
    if rgb and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    # save_cpu_ram: no DataLoader worker processes for in-memory tensors
    return get_featuresdict_from_dataset(_Images(images), net, batch_size, device == "cuda", True, False)[layer]


def provenance(extractor: ExtractorSpec, reference_id: str, num_reference: int, num_samples: int) -> dict[str, str]:
    """Tags to log with every FID value, so that only comparable numbers are compared."""
    return {
        "fid.implementation": f"torch-fidelity-{importlib.metadata.version('torch-fidelity')}",  # without importing it
        "fid.extractor": extractor.name,
        "fid.feature_layer": extractor.feature_layer,
        "fid.extractor_weights": extractor.weights_id(),
        "fid.reference": reference_id,
        "fid.num_reference": str(num_reference),
        "fid.num_samples": str(num_samples),
        "fid.rng_seed": str(RNG_SEED),
    }
