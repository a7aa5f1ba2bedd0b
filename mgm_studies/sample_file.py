"""`mgm-studies sample`'s file: samples of a run streamed chunk by chunk into Parquet, written beside `--out` and
renamed into place only when complete, so memory holds one chunk whatever `--num-samples` is and no half-written
file ever has the requested name.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from mgm_studies.configbase import ConfigError
from mgm_studies.evaluation import generate_chunks, noise_chunks
from mgm_studies.objectives import Objective


def claim_out(out: Path) -> Path:
    """A new empty file beside `out` (created, with its folders): the proof that --out can be written, and where the
    samples go until they are complete. A ConfigError on --out when it cannot be."""
    if out.is_dir():
        raise ConfigError.single("--out", f"{out} is a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError.single("--out", f"cannot write {out}: {exc.strerror or exc}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(handle, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename: the mode a plain open gives
    os.close(handle)
    return Path(partial)


def check_disk(folder: Path, num_samples: int, shape: tuple[int, ...]) -> None:
    """Refuse --num-samples whose float32 values (what the Parquet file holds, nearly incompressible) exceed the free
    space of `folder`."""
    need, free = num_samples * math.prod(shape) * 4, shutil.disk_usage(folder).free
    if need > free:
        raise ConfigError.single(
            "--num-samples",
            f"{num_samples:,} samples of shape {tuple(shape)} need about {need / 2**30:.3g} GiB and {folder} has "
            f"{free / 2**30:.3g} GiB free",
        )


def write_samples(
    objective: Objective,
    model: nn.Module,
    shape: Sequence[int],
    path: Path,
    *,
    num_samples: int,
    num_steps: int,
    seed: int,
    device: torch.device,
) -> int:
    """Sample `num_samples` chunk by chunk (`chunk_sizes`), appending each chunk to the Parquet file `path`; returns
    the NFE per sample. Memory holds one chunk whatever `num_samples` is; the noise is drawn chunk after chunk from
    one generator seeded with `seed`, the values one draw of all of it gives (`noise_chunks`).

    Columns: vectors, one float32 column per dimension (`x0`, `x1`, ...); images, one list column `image` of the
    flattened pixels in [-1, 1], with the shape "C,H,W" in the schema's metadata (`shape`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    noise = noise_chunks(objective.interpolant, num_samples, shape, torch.Generator().manual_seed(seed))
    writer, nfe = None, 0
    try:
        for result in generate_chunks(objective, model, noise, num_steps, device):
            x, nfe = result.x, result.nfe
            if x.dim() == 2:
                table = pa.table({f"x{i}": x[:, i].numpy() for i in range(x.shape[1])})
            else:
                pixels = x.flatten(1).numpy()
                column = pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1)), pixels.shape[1])
                table = pa.table({"image": column}).replace_schema_metadata({"shape": ",".join(map(str, shape))})
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return nfe
