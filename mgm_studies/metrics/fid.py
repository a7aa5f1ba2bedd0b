"""FID (and KID, precision/recall) of generated images through torch-fidelity, with cached reference statistics.

One pinned implementation: every number comes from `torch_fidelity.calculate_metrics` (style guide: "two FID
pipelines that disagree"); this module picks the extractor, the reference's cache entry and the kwargs, and
`provenance` gives the tags to log with each value.

Reference cache. torch-fidelity caches an input that has a cache name: its FID statistics {"mu": (D,), "sigma":
(D, D)} as `<cache_dir>/<name>-<extractor>-stat-fid-<layer>.pt`, and, when KID or precision/recall need them, its
features as `<name>-<extractor>-features-<layer>.pt` (written atomically). The reference gets the name
`reference_cache_key(...)`, a hash of the reference id and shape, the extractor, its weights hash and the feature
layer, so that new weights or another reference never reuse stale statistics. On a hit for FID alone torch-fidelity
does not read the reference at all: the id, not the tensor, names the reference set, so give each distinct set (or
subset, or seed) its own id. The generated samples never get a cache name.

Extractors (`ExtractorSpec.name`):
- "mgm-offline": `metrics.extractor`'s small classifier; `weights_path` (required) is a file from `save_extractor`
  trained on images of the same (C, H, W).
- "inception-v3-compat": torch-fidelity's TF-ported Inception-v3, pool3 (2048 features). With `weights_path=None`
  torch-fidelity loads `weights-inception-2015-12-05-6726825d.pth` from `$TORCH_HOME/hub/checkpoints/`, downloading
  it if absent (copy the file there on offline machines); or give the path of a local copy. 1-channel images are
  repeated to 3 channels for it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import model_validator
from torch import Tensor
from torch.utils.data import Dataset

from mgm_studies.configbase import StrictModel
from mgm_studies.metrics.extractor import (
    FEATURE_LAYER,
    OFFLINE_EXTRACTOR_NAME,
    register_offline_extractor,
    weights_hash,
)

INCEPTION_NAME = "inception-v3-compat"
INCEPTION_DEFAULT_WEIGHTS = "weights-inception-2015-12-05-6726825d"  # torch-fidelity's download; the hash is its name
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


def fid_implementation() -> str:
    """E.g. "torch-fidelity-0.4.0": the installed version, read without importing it."""
    return f"torch-fidelity-{importlib.metadata.version('torch-fidelity')}"


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
    """FID of `samples` against `reference` (and KID, precision/recall), via torch_fidelity.calculate_metrics.

    Args:
        samples: (N, C, H, W) uint8 generated images, C in (1, 3), any device (moved to the CPU for loading).
        reference: (M, C', H', W') uint8 real images with (C', H', W') = (C, H, W); only read on a cache miss.
        reference_id: names the reference set in the statistics cache (see the module docstring).
        extractor: which feature extractor and weights.
        cache_dir: where the reference statistics and features are cached.
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
    import torch_fidelity  # imports torchvision: only when FID is computed

    cache_name = reference_cache_key(reference_id, extractor, reference.shape)
    samples, reference = samples.detach().cpu(), reference.detach().cpu()
    if extractor.name == OFFLINE_EXTRACTOR_NAME:
        register_offline_extractor()
    elif samples.shape[1] == 1:  # Inception reads RGB
        samples, reference = samples.expand(-1, 3, -1, -1), reference.expand(-1, 3, -1, -1)
    layer = extractor.feature_layer
    raw = torch_fidelity.calculate_metrics(
        input1=_Images(samples),
        input2=_Images(reference),
        input2_cache_name=cache_name,
        cache_root=str(cache_dir),
        cache=True,
        feature_extractor=extractor.name,
        feature_extractor_weights_path=extractor.weights_path,
        feature_layer_fid=layer,
        feature_layer_kid=layer,
        feature_layer_prc=layer,
        fid=True,
        kid=kid,
        prc=prc,
        kid_subset_size=min(KID_SUBSET_SIZE, len(samples), len(reference)),
        cuda=device == "cuda",  # torch-fidelity defaults to True
        batch_size=batch_size,
        rng_seed=RNG_SEED,
        save_cpu_ram=True,  # no DataLoader worker processes for in-memory tensors; blockwise precision/recall
        verbose=False,
    )
    out = {"fid": float(raw[torch_fidelity.KEY_METRIC_FID])}
    if kid:
        out["kid"] = float(raw[torch_fidelity.KEY_METRIC_KID_MEAN])
        out["kid_std"] = float(raw[torch_fidelity.KEY_METRIC_KID_STD])
    if prc:
        out["precision"] = float(raw[torch_fidelity.KEY_METRIC_PRECISION])
        out["recall"] = float(raw[torch_fidelity.KEY_METRIC_RECALL])
    return out


def provenance(extractor: ExtractorSpec, reference_id: str, num_reference: int, num_samples: int) -> dict[str, str]:
    """Tags to log with every FID value, so that only comparable numbers are compared."""
    return {
        "fid.implementation": fid_implementation(),
        "fid.extractor": extractor.name,
        "fid.feature_layer": extractor.feature_layer,
        "fid.extractor_weights": extractor.weights_id(),
        "fid.reference": reference_id,
        "fid.num_reference": str(num_reference),
        "fid.num_samples": str(num_samples),
        "fid.rng_seed": str(RNG_SEED),
    }
