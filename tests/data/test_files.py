"""FileData: Parquet and .npy round trips, and a DataError naming the field for each kind of bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mgm_studies.data import DataError, HistogramSpec
from mgm_studies.data.files import FileData

ROWS = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0], [9.0, 10.0, 11.0]])


def write_parquet(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def raises(field: str, *words: str, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        FileData(**kwargs)
    assert info.value.field == field, info.value
    for word in words:
        assert word in info.value.message, info.value.message
    return info.value


def test_parquet_numeric_columns(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "x.parquet",
        {"a": ROWS[:, 0], "b": pa.array(ROWS[:, 1].astype(np.int64)), "c": pa.array(ROWS[:, 2], pa.float32())},
    )
    data = FileData(path)
    assert data.dim == 3 and data.data.dtype == torch.float32
    assert torch.equal(data.data, torch.tensor(ROWS, dtype=torch.float32))
    assert data.histogram is None  # no KL box above 2 dimensions
    assert data.bin_masses(HistogramSpec((0.0,) * 3, (1.0,) * 3, 2)) is None


def test_parquet_selected_columns_in_the_given_order(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "x.parquet", {"a": ROWS[:, 0], "b": ROWS[:, 1], "label": ["u", "v", "w", "z"]})
    data = FileData(str(path), columns=["b", "a"])
    assert torch.equal(data.data, torch.tensor(ROWS[:, [1, 0]], dtype=torch.float32))


@pytest.mark.parametrize("fixed", [True, False])
def test_parquet_list_column(tmp_path: Path, fixed: bool) -> None:
    kind = pa.list_(pa.float64(), 3) if fixed else pa.list_(pa.float64())
    path = write_parquet(tmp_path / "x.parquet", {"x": pa.array(ROWS.tolist(), kind), "id": [1, 2, 3, 4]})
    data = FileData(path, columns=["x"])
    assert data.dim == 3 and torch.equal(data.data, torch.tensor(ROWS, dtype=torch.float32))


def test_npy_round_trip_and_histogram_box(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", ROWS[:, :2].astype(np.float32))
    data = FileData(tmp_path / "x.npy")
    assert torch.equal(data.data, torch.tensor(ROWS[:, :2], dtype=torch.float32))
    # min/max (0, 9) and (1, 10), padded by 5% of the range 9 on both sides.
    assert data.histogram.bins == 32
    assert data.histogram.low == pytest.approx((-0.45, 0.55)) and data.histogram.high == pytest.approx((9.45, 10.45))


def test_sample_and_reference_draw_rows(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(200, dtype=np.int32).reshape(100, 2))
    data = FileData(tmp_path / "x.npy")
    sample = data.sample(500, torch.Generator().manual_seed(0))
    assert sample.shape == (500, 2) and (sample[:, 1] == sample[:, 0] + 1).all()
    assert torch.equal(sample, data.sample(500, torch.Generator().manual_seed(0)))
    assert len(torch.unique(sample[:, 0])) > 90  # with replacement: nearly every row appears in 500 draws
    reference = data.reference(1000, torch.Generator().manual_seed(0))
    assert reference.shape == (100, 2) and len(torch.unique(reference[:, 0])) == 100  # without replacement
    assert data.reference(10, torch.Generator().manual_seed(0)).shape == (10, 2)


def test_missing_file_and_unsupported_extension(tmp_path: Path) -> None:
    raises("path", "not found", "nope.npy", path=tmp_path / "nope.npy")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    raises("path", "unsupported", ".csv", path=tmp_path / "x.csv")


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    raises("path", "cannot read", path=tmp_path / "x.parquet")
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    raises("path", "cannot read", path=tmp_path / "x.npy")
    np.save(tmp_path / "objects.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    raises("path", "cannot read", path=tmp_path / "objects.npy")


def test_non_numeric_column_is_named_with_its_type(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "x.parquet", {"a": ROWS[:, 0], "label": ["u", "v", "w", "z"]})
    raises("columns", "'label'", "string", path=path)
    path = write_parquet(tmp_path / "y.parquet", {"a": ROWS[:, 0], "x": pa.array(ROWS.tolist())})
    raises("columns", "'x'", "list", "only column", path=path)


def test_unknown_and_empty_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "x.parquet", {"a": ROWS[:, 0], "b": ROWS[:, 1]})
    raises("columns", "unknown", "'z'", path=path, columns=["a", "z"])
    raises("columns", "empty", path=path, columns=[])
    np.save(tmp_path / "x.npy", ROWS)
    raises("columns", "Parquet", path=tmp_path / "x.npy", columns=["a"])


def test_nan_and_inf_rows_are_counted_with_the_first_index(tmp_path: Path) -> None:
    values = ROWS.copy()
    values[2, 1], values[3, 0] = np.nan, np.inf
    np.save(tmp_path / "x.npy", values)
    raises("path", "2 of 4 rows", "NaN", "row 2", path=tmp_path / "x.npy")
    path = write_parquet(tmp_path / "x.parquet", {"a": pa.array([1.0, None, 3.0]), "b": [1.0, 2.0, 3.0]})
    raises("path", "1 of 3 rows", "missing", "row 1", path=path)
    np.save(tmp_path / "big.npy", np.array([[1.0], [1e300]]))  # beyond float32
    raises("path", "inf", "row 1", path=tmp_path / "big.npy")


def test_wrong_shapes(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.arange(5.0))
    raises("path", "2-D", "(5,)", path=tmp_path / "flat.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    raises("path", "2-D", "(2, 2, 2)", path=tmp_path / "cube.npy")
    path = write_parquet(tmp_path / "ragged.parquet", {"x": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0]])})
    raises("path", "ragged", "row 2", path=path)
    np.save(tmp_path / "one.npy", np.zeros((1, 2)))
    raises("path", "1 row", "at least 2", path=tmp_path / "one.npy")
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    raises("path", "dtype", path=tmp_path / "text.npy")
