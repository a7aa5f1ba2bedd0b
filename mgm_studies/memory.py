"""The memory this machine has, and what FID's images need of it: shared by the checks before a run
(`preflight.py`) and evaluation (`check_images_fit`, before FID keeps every generated image)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from mgm_studies.configbase import ConfigError

GIB = 1 << 30
FLOAT_BYTES = 4
_FEATURES = 2048  # FID features per image (Inception pool3; the offline extractor has fewer)


def fid_image_bytes(shape: tuple[int, ...]) -> int:
    """Host bytes FID keeps per image of `shape`: a float and a uint8 copy, and its float64 features."""
    return math.prod(shape) * (FLOAT_BYTES + 1) + _FEATURES * 8


def check_images_fit(num_samples: int, shape: tuple[int, ...], field: str) -> None:
    """Refuse (naming `field`) keeping `num_samples` generated images of `shape` for FID in host memory."""
    need = num_samples * fid_image_bytes(shape)
    host = available_memory()["host"]
    if need > host:
        raise ConfigError.single(
            field,
            f"too large: FID keeps every generated image, {num_samples:,} images need about {need / GIB:.3g} GiB "
            f"and the host memory is {host / GIB:.3g} GiB",
        )


def available_memory(device: str = "cpu") -> dict[str, int]:
    """Bytes of memory: {"host": physical memory, capped by a cgroup limit; "device": the CUDA device's total, or the
    host's for the CPU}."""
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            host = min(host, int(text))
    except OSError:
        pass
    target = torch.device(device)
    if target.type == "cuda" and torch.cuda.is_available():
        return {"host": host, "device": torch.cuda.mem_get_info(target)[1]}
    return {"host": host, "device": host}
