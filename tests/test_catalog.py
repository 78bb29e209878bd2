"""The catalog contract: only content_id is required, defaults fill the rest, and a wrong
catalog gets one line that names the file, the column, the row and the reason."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgecache.pipeline.catalog import (
    BYTES_PER_SECOND,
    DEFAULT_GENRE,
    DEFAULT_RELEASE,
    DEFAULT_SIZE_BYTES,
    SCHEMA,
    CatalogError,
    extend_inferred,
    infer_catalog,
    load_catalog,
    to_arrow,
)


def csv(tmp_path, text: str, name: str = "catalog.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_only_content_id_is_required(tmp_path):
    cat = load_catalog(csv(tmp_path, "content_id\nM2\nM1\n"))
    assert cat["content_id"].tolist() == ["M1", "M2"]
    assert cat["kind"].tolist() == ["movie", "movie"]
    assert cat["size_bytes"].tolist() == [DEFAULT_SIZE_BYTES] * 2
    assert cat["genre"].tolist() == [DEFAULT_GENRE] * 2 and cat["release_date"].tolist() == [DEFAULT_RELEASE] * 2
    assert cat["series_id"].isna().all() and cat["episode"].isna().all()
    assert to_arrow(cat).schema == SCHEMA


def test_defaults_follow_from_the_columns_given(tmp_path):
    cat = load_catalog(csv(tmp_path, "content_id,size_bytes,runtime_min,series_id,episode,extra\n"
                                     "A,,90,,,x\nB,72000000,,S1,1,y\nC,,,S1,,z\n"))
    a, b, c = (cat.iloc[i] for i in range(3))
    assert a["size_bytes"] == 90 * 60 * BYTES_PER_SECOND and a["kind"] == "movie"
    assert b["runtime_min"] == pytest.approx(72_000_000 / BYTES_PER_SECOND / 60) and b["kind"] == "episode"
    assert c["kind"] == "movie"  # a series without an episode number has no order to follow
    assert "extra" not in cat


def test_parquet_with_all_null_and_typed_columns(tmp_path):
    path = tmp_path / "catalog.parquet"
    pq.write_table(pa.table({"content_id": ["M305", "M7"], "series_id": pa.array([None, None], pa.int64()),
                             "size_bytes": [5, 6], "release_date": pa.array([None, None], pa.date32())}), path)
    cat = load_catalog(path)
    assert cat["series_id"].isna().all() and cat["size_bytes"].tolist() == [5, 6]
    assert cat["release_date"].tolist() == [DEFAULT_RELEASE] * 2


@pytest.mark.parametrize("text, column, row, reason", [
    ("title\nx\n", "content_id", None, "required column missing"),
    ("content_id\n", "content_id", None, "no rows"),
    ("content_id\nA\n\n", None, None, None),  # a blank line at the end is no row
    ("content_id\nA\nA\n", "content_id", 2, "appears twice"),
    ("content_id\nA\nB:C\n", "content_id", 2, "is not 1-64 letters"),
    ("content_id,size_bytes\nA,10\nB,-5\n", "size_bytes", 2, "negative"),
    ("content_id,size_bytes\nA,0\n", "size_bytes", 1, "below 1"),
    ("content_id,size_bytes\nA,big\n", "size_bytes", 1, "is not a number"),
    ("content_id,size_bytes\nA,1.5\n", "size_bytes", 1, "not a whole number"),
    ("content_id,episode\nA,1\nB,0\n", "episode", 2, "below 1"),
    ("content_id,release_date\nA,2025-02-30\n", "release_date", 1, "not a date"),
    ("content_id,series_id,episode\nA,S 1,1\n", "series_id", 1, "is not 1-64"),
    ("content_id,series_id,episode\nA,S1,1\nB,S1,1\n", "episode", 2, "appears twice"),
    ("content_id,runtime_min\nA,inf\n", "runtime_min", 1, "not a finite number"),
])
def test_a_wrong_catalog_gets_one_line(tmp_path, text, column, row, reason):
    path = csv(tmp_path, text)
    if column is None:
        assert len(load_catalog(path)) == 1
        return
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and f"column {column!r}" in message and reason in message
    assert (f"row {row}:" in message) == (row is not None)


def test_unreadable_files(tmp_path):
    for path, reason in ((tmp_path / "missing.csv", "no such file"),
                         (csv(tmp_path, "x", "catalog.json"), "expected a .csv or .parquet"),
                         (csv(tmp_path, "not parquet", "catalog.parquet"), "not a readable Parquet")):
        with pytest.raises(CatalogError, match=reason):
            load_catalog(path)
    bad_utf8 = tmp_path / "latin1.csv"
    bad_utf8.write_bytes(b"content_id\n\xe9t\xe9\n")
    with pytest.raises(CatalogError, match="not a readable CSV"):
        load_catalog(bad_utf8)


def test_an_inferred_catalog_sizes_titles_by_their_longest_view():
    cat = infer_catalog(pd.DataFrame({"content_id": ["b", "a"], "duration": [30, 0]}))
    assert cat.set_index("content_id")["size_bytes"].to_dict() == {
        "a": DEFAULT_SIZE_BYTES, "b": 30 * 60 * BYTES_PER_SECOND}
    grown = extend_inferred(cat, pd.DataFrame({"content_id": ["b", "c"], "duration": [99, 2]}))
    assert grown.set_index("content_id")["size_bytes"].to_dict() == {
        "a": DEFAULT_SIZE_BYTES, "b": 30 * 60 * BYTES_PER_SECOND, "c": 2 * 60 * BYTES_PER_SECOND}
