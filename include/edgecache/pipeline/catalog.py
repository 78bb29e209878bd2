"""The catalog contract: an operator's own catalog (CSV or Parquet), checked and put in the
one typed form every stage reads, or a catalog inferred from the logs when there is none.

Only ``content_id`` is required. The other columns are optional; where a column, or a
value in it, is missing the default below applies:

| column         | type    | default                                                          |
| -------------- | ------- | ---------------------------------------------------------------- |
| `content_id`   | id      | required, unique                                                 |
| `size_bytes`   | integer | `runtime_min` x 60 x `BYTES_PER_SECOND`, else `DEFAULT_SIZE_BYTES`|
| `series_id`    | id      | none: the title is a movie                                       |
| `episode`      | integer | none (position in the whole series, 1-based)                     |
| `season`       | integer | none                                                             |
| `genre`        | text    | `unknown`                                                        |
| `release_date` | date    | `1970-01-01`: released long ago, no launch interest              |
| `runtime_min`  | number  | `size_bytes` / `BYTES_PER_SECOND` / 60, else 60                  |

A title is an ``episode`` when it has both a series and an episode number, else a
``movie``. Other columns are ignored. The check runs in plain Python before any Spark job,
and a wrong catalog gets one line naming the file, the column, the row and the reason.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from edgecache.schema import ID_RE

BYTES_PER_SECOND = 600_000  # 4.8 Mbit/s, an HD stream: the size of a minute is 36 MB
DEFAULT_RUNTIME_MIN = 60
DEFAULT_SIZE_BYTES = DEFAULT_RUNTIME_MIN * 60 * BYTES_PER_SECOND
DEFAULT_GENRE = "unknown"
DEFAULT_RELEASE = "1970-01-01"
OPTIONAL = ("size_bytes", "series_id", "episode", "season", "genre", "release_date", "runtime_min")

# The one typed form of a catalog that every stage reads (reference/catalog.parquet).
SCHEMA = pa.schema(
    [
        ("content_id", pa.string()),
        ("kind", pa.string()),
        ("series_id", pa.string()),
        ("season", pa.int64()),
        ("episode", pa.int64()),
        ("genre", pa.string()),
        ("release_date", pa.string()),
        ("runtime_min", pa.float64()),
        ("size_bytes", pa.int64()),
    ]
)


class CatalogError(ValueError):
    """A catalog that breaks the contract; the message is one line a person can act on."""


def _fail(path: Path | str, column: str, row: int | None, reason: str) -> CatalogError:
    where = f", row {row}" if row is not None else ""
    return CatalogError(f"catalog {path}: column {column!r}{where}: {reason}")


def read_table(path: Path) -> pd.DataFrame:
    """The raw rows of a CSV or Parquet file, every CSV cell as text (types are checked later)."""
    if not path.exists():
        raise CatalogError(f"catalog {path}: no such file")
    if path.is_dir() or path.suffix.lower() in (".parquet", ".pq"):
        try:
            return pq.read_table(path).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            raise CatalogError(f"catalog {path}: not a readable Parquet file ({exc})") from None
    if path.suffix.lower() not in (".csv", ".gz", ".txt", ".tsv"):
        raise CatalogError(f"catalog {path}: expected a .csv or .parquet file")
    try:
        return pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            sep="\t" if path.suffix.lower() == ".tsv" else ",",
            encoding="utf-8-sig",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CatalogError(f"catalog {path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None


def _first_bad(mask: np.ndarray) -> int:
    """The 1-based data row of the first True (row 1 is the first row after a CSV header)."""
    return int(np.flatnonzero(mask)[0]) + 1


def _ids(frame: pd.DataFrame, column: str, path: Path, required: bool) -> pd.Series:
    values = frame[column]
    missing = values.isna().to_numpy()
    if required and missing.any():
        raise _fail(path, column, _first_bad(missing), "missing value")
    text = values.map(lambda v: v if isinstance(v, str) else (None if pd.isna(v) else str(v)))
    bad = np.array([v is not None and not ID_RE.fullmatch(v) for v in text])
    if bad.any():
        row = _first_bad(bad)
        raise _fail(path, column, row, f"{text.iloc[row - 1]!r} is not 1-64 letters, digits, '_' or '-'")
    return text


def _numbers(frame: pd.DataFrame, column: str, path: Path, integer: bool, minimum: float) -> pd.Series:
    """A numeric column (nulls kept), or the first row that is not a number >= minimum."""
    raw = frame[column]
    if raw.dtype == bool or raw.map(lambda v: isinstance(v, (bool, np.bool_))).any():
        raise _fail(
            path,
            column,
            _first_bad(raw.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy()),
            "a boolean is not a number",
        )
    values = pd.to_numeric(raw, errors="coerce").astype("float64")  # nullable ints: NA -> NaN
    bad = (values.isna() & raw.notna()).to_numpy()
    if bad.any():
        row = _first_bad(bad)
        raise _fail(path, column, row, f"{raw.iloc[row - 1]!r} is not a number")
    finite = values.dropna()
    if not np.isfinite(finite.to_numpy(dtype=float)).all():
        row = _first_bad((values.notna() & ~np.isfinite(values.fillna(0).to_numpy(dtype=float))).to_numpy())
        raise _fail(path, column, row, "not a finite number")
    if integer and (finite % 1 != 0).any():
        row = _first_bad((values.notna() & (values.fillna(0) % 1 != 0)).to_numpy())
        raise _fail(path, column, row, f"{raw.iloc[row - 1]!r} is not a whole number")
    low = (values < minimum).to_numpy()
    if low.any():
        row = _first_bad(low)
        what = "negative" if values.iloc[row - 1] < 0 else f"below {minimum:g}"
        raise _fail(path, column, row, f"{raw.iloc[row - 1]!r} is {what}")
    return values.astype("float64")


def _dates(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    def iso(v: object) -> str | None:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return None
        if isinstance(v, (dt.date, pd.Timestamp)):
            return pd.Timestamp(v).date().isoformat()
        return dt.date.fromisoformat(str(v).strip()[:10]).isoformat()

    out = []
    for i, v in enumerate(frame[column]):
        try:
            out.append(iso(v))
        except ValueError:
            raise _fail(path, column, i + 1, f"{v!r} is not a date (YYYY-MM-DD)") from None
    return pd.Series(out, index=frame.index, dtype=object)


def normalize(frame: pd.DataFrame, path: Path | str = "<frame>") -> pd.DataFrame:
    """Check a raw catalog frame against the contract and return it in the typed form
    (the columns of ``SCHEMA``, sorted by content_id); raise ``CatalogError`` at the first fault."""
    path = Path(path)
    frame = frame.rename(columns=lambda c: str(c).strip()).reset_index(drop=True)
    if "content_id" not in frame:
        raise _fail(
            path, "content_id", None, f"required column missing (columns: {', '.join(map(str, frame.columns))})"
        )
    if frame.empty:
        raise _fail(path, "content_id", None, "the catalog has no rows")
    for name in OPTIONAL:
        if name not in frame:
            frame[name] = None
    ids = _ids(frame, "content_id", path, required=True)
    dup = ids.duplicated().to_numpy()
    if dup.any():
        row = _first_bad(dup)
        raise _fail(path, "content_id", row, f"{ids.iloc[row - 1]!r} appears twice")
    series = _ids(frame, "series_id", path, required=False)
    size = _numbers(frame, "size_bytes", path, integer=True, minimum=1)
    runtime = _numbers(frame, "runtime_min", path, integer=False, minimum=0)
    episode = _numbers(frame, "episode", path, integer=True, minimum=1)
    season = _numbers(frame, "season", path, integer=True, minimum=1)
    genre = frame["genre"].map(lambda v: None if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v))
    release = _dates(frame, "release_date", path)

    runtime = runtime.fillna(size / BYTES_PER_SECOND / 60).fillna(DEFAULT_RUNTIME_MIN)
    size = size.fillna((runtime * 60 * BYTES_PER_SECOND).round()).clip(lower=1)
    is_episode = series.notna() & episode.notna()
    out = pd.DataFrame(
        {
            "content_id": ids,
            "kind": np.where(is_episode, "episode", "movie"),
            "series_id": series.where(series.notna(), None),
            "season": season.astype("Int64"),
            "episode": episode.astype("Int64"),
            "genre": genre.fillna(DEFAULT_GENRE),
            "release_date": release.fillna(DEFAULT_RELEASE),
            "runtime_min": runtime.astype("float64"),
            "size_bytes": size.astype("int64"),
        }
    )
    dup_ep = out[is_episode.to_numpy()].duplicated(["series_id", "episode"])
    if dup_ep.any():
        row = int(dup_ep[dup_ep].index[0]) + 1
        raise _fail(
            path,
            "episode",
            row,
            f"episode {out.loc[row - 1, 'episode']} of series {out.loc[row - 1, 'series_id']!r} appears twice",
        )
    return out.sort_values("content_id", kind="stable").reset_index(drop=True)


def load_catalog(path: Path | str) -> pd.DataFrame:
    """Read and check an operator's catalog file; the typed frame, or ``CatalogError``."""
    path = Path(path)
    return normalize(read_table(path), path)


def infer_catalog(longest: pd.DataFrame) -> pd.DataFrame:
    """A catalog of movies from the titles seen in the logs (``content_id`` and ``duration``,
    the longest minutes any view lasted): size = BYTES_PER_SECOND x that duration, or the
    default runtime where every view lasted 0 minutes."""
    runtime = longest["duration"].astype("float64").where(longest["duration"] > 0, DEFAULT_RUNTIME_MIN)
    return normalize(
        pd.DataFrame({"content_id": longest["content_id"].astype(str), "runtime_min": runtime.to_numpy()}),
        "<inferred from the logs>",
    )


def to_arrow(catalog: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(catalog[SCHEMA.names], schema=SCHEMA, preserve_index=False)


def write_catalog(catalog: pd.DataFrame, path: Path) -> None:
    """Write the typed catalog so a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(to_arrow(catalog), tmp)
    tmp.replace(path)


def extend_inferred(catalog: pd.DataFrame | None, longest: pd.DataFrame) -> pd.DataFrame:
    """An inferred catalog plus the titles of ``longest`` it lacks (rows it has stay as they
    are, so a title's size does not change from one night to the next)."""
    new = longest if catalog is None else longest[~longest["content_id"].isin(catalog["content_id"])]
    if catalog is not None and new.empty:
        return catalog
    added = infer_catalog(new) if not new.empty else None
    parts = [f for f in (catalog, added) if f is not None]
    return normalize(pd.concat(parts, ignore_index=True), "<inferred from the logs>")


def read_catalog(path: Path) -> pd.DataFrame:
    """The typed catalog a stage wrote (``reference/catalog.parquet``)."""
    return pq.read_table(path).to_pandas()


def is_inferred(info_path: Path) -> bool:
    """True when the catalog beside ``info_path`` was inferred from the logs."""
    return info_path.exists() and json.loads(info_path.read_text()).get("source") == "inferred"


def read_spark(spark, path: Path):  # noqa: ANN001, ANN201 - pyspark types stay out of this module's imports
    """The typed catalog as a Spark DataFrame, every column of ``SCHEMA`` cast to its type
    (a column the file lacks is null), so queries never meet a column of the wrong type."""
    from pyspark.sql import functions as F

    types = {"string": "string", "int64": "bigint", "double": "double"}
    df = spark.read.parquet(str(path))
    return df.select(
        *[
            (F.col(f.name) if f.name in df.columns else F.lit(None)).cast(types[str(f.type)]).alias(f.name)
            for f in SCHEMA
        ]
    )
