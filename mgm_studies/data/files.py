"""User vectors from a Parquet file or a `.npy` array, validated with errors that name the config field at fault."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor

from mgm_studies.configbase import StrictModel
from mgm_studies.data.base import DataError, HistogramSpec, VectorDataset

_PARQUET_SUFFIXES = (".parquet", ".pq")
_BINS = 32
_PAD = 0.05  # box margin on each side, as a fraction of the data range


class FileData(VectorDataset):
    """The empirical distribution of the rows of a file.

    Args:
        path: a Parquet file (`.parquet`, `.pq`) or a NumPy `.npy` file.
        columns: Parquet only: the columns to use (default: all). Either numeric columns (one dimension each) or a
            single column of equal-length lists of numbers (one dimension per list element).

    The rows are held as an (N, d) float32 tensor, `data`. `sample` draws rows uniformly with replacement;
    `reference` is a subsample without replacement. `histogram` (d <= 2): the data's min/max per axis padded by 5%
    of the range, 32 bins. Raises DataError naming "path" or "columns" for any problem with the file.
    """

    name = "file"

    def __init__(self, path: str | Path, columns: Sequence[str] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError("path", f"file not found: {self.path}")
        suffix = self.path.suffix.lower()
        if suffix in _PARQUET_SUFFIXES:
            array = _read_parquet(self.path, None if columns is None else list(columns))
        elif suffix == ".npy":
            if columns is not None:
                raise DataError("columns", "columns apply to Parquet files only; a .npy file is used whole")
            array = _read_npy(self.path)
        else:
            raise DataError(
                "path", f"unsupported file extension {self.path.suffix!r} ({self.path.name}); use .parquet or .npy"
            )
        self.data = _checked_tensor(array, self.path)
        self.dim = int(self.data.shape[1])
        self.histogram = _padded_box(self.data) if self.dim <= 2 else None

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        index = torch.randint(len(self), (n,), generator=generator)
        return self.data[index]

    def reference(self, n: int, generator: torch.Generator) -> Tensor:
        """min(n, N) distinct rows, in random order."""
        index = torch.randperm(len(self), generator=generator)[: min(n, len(self))]
        return self.data[index]

    def __repr__(self) -> str:
        return f"FileData(path={str(self.path)!r}, rows={len(self)}, dim={self.dim})"


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError... for bad files
        raise DataError("path", f"cannot read {path} as a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise DataError("path", f"{path} is not a single .npy array")
    if array.ndim != 2:
        raise DataError("path", f"expected a 2-D array of shape (N, d) in {path}, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError("path", f"the array in {path} has dtype {array.dtype}; expected integers or floats")
    return array


def _read_parquet(path: Path, columns: list[str] | None) -> np.ndarray:
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError... for bad files
        raise DataError("path", f"cannot read {path} as Parquet: {exc}") from None
    if columns is None:
        # pandas stores a non-default index as extra columns; it is not data.
        columns = [name for name in names if not name.startswith("__index_level_")]
        if not columns:
            raise DataError("path", f"{path} has no columns")
    else:
        if not columns:
            raise DataError("columns", "columns is empty; name at least one column, or leave it unset for all")
        unknown = [name for name in columns if name not in names]
        if unknown:
            raise DataError("columns", f"unknown column(s) {unknown}; {path.name} has columns {names}")
        if len(set(columns)) != len(columns):
            raise DataError("columns", f"columns are repeated: {columns}")
    try:
        table = pq.read_table(path, columns=columns)
    except Exception as exc:
        raise DataError("path", f"cannot read {path} as Parquet: {exc}") from None
    first = table.schema.field(0)
    if table.num_columns == 1 and _is_list(first.type):
        return _list_column(table.column(0), first.name, path)
    for item in table.schema:
        if not _is_number(item.type):
            hint = "; a list column must be the only column used" if _is_list(item.type) else ""
            raise DataError(
                "columns",
                f"column {item.name!r} has type {item.type}, not numeric: every column used must hold integers or "
                f"floats{hint} (select columns with `columns`; {path.name} has {names})",
            )
    # Nulls become NaN here and are reported with the NaN check.
    arrays = [table.column(i).cast(pa.float64()).to_numpy(zero_copy_only=False) for i in range(table.num_columns)]
    return np.stack(arrays, axis=1)


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _list_column(column: pa.ChunkedArray, name: str, path: Path) -> np.ndarray:
    if not _is_number(column.type.value_type):
        raise DataError("columns", f"column {name!r} has type {column.type}; list elements must be integers or floats")
    if column.null_count:
        first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError("path", f"column {name!r} has {column.null_count} missing rows; the first is row {first}")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        first = int(np.flatnonzero(lengths != lengths[0])[0])
        raise DataError(
            "path",
            f"column {name!r} holds lists of different lengths (ragged): row 0 has {lengths[0]} elements, "
            f"row {first} has {lengths[first]}; every row must have the same length",
        )
    width = int(lengths[0]) if len(lengths) else 0
    values = pc.list_flatten(column).cast(pa.float64()).to_numpy(zero_copy_only=False)
    return values.reshape(len(lengths), width)


def _checked_tensor(array: np.ndarray, path: Path) -> Tensor:
    if array.shape[0] < 2:
        raise DataError("path", f"the data in {path} have {array.shape[0]} row(s); at least 2 are needed")
    if array.shape[1] == 0:
        raise DataError("path", f"the data in {path} have no dimensions (shape {array.shape})")
    # Checked after the cast, so values beyond the float32 range (now inf) are caught too.
    with np.errstate(over="ignore"):
        data = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    bad_rows = (~torch.isfinite(data)).any(dim=1)
    if bad_rows.any():
        first = int(torch.nonzero(bad_rows)[0, 0])
        raise DataError(
            "path",
            f"{int(bad_rows.sum())} of {len(data)} rows in {path} hold NaN, inf or missing values; "
            f"the first is row {first}",
        )
    return data


def _padded_box(data: Tensor) -> HistogramSpec:
    low, high = data.double().amin(dim=0), data.double().amax(dim=0)
    span = high - low
    # A constant axis has no range to pad by: give it a unit-wide box.
    pad = torch.where(span > 0, _PAD * span, torch.full_like(span, 0.5))
    return HistogramSpec(tuple((low - pad).tolist()), tuple((high + pad).tolist()), _BINS)


class FileDataConfig(StrictModel):
    """User vectors: a Parquet file (numeric columns, or one list column) or a `.npy` array of shape (N, d)."""

    name: Literal["file"]
    path: str
    columns: list[str] | None = None

    def build(self) -> FileData:
        return FileData(self.path, columns=self.columns)
