"""A small day for the delivery path's tests: eight titles, one edge, a full cache."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from edgecache.cache import day_start
from edgecache.layout import Layout

DATE = "2025-04-12"
T0 = day_start(DATE) + 86400  # the predictions are for D+1
TTL = 3600


def write_day(root: Path, catalog: pd.DataFrame, prefetch: pd.DataFrame, demand: pd.DataFrame,
              transitions: pd.DataFrame | None = None) -> None:
    """The files the warm reads: catalog, predictions (no viewers) and transitions."""
    layout = Layout(root)
    layout.reference.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(catalog, preserve_index=False), layout.catalog)
    users = pa.table({"user_id": pa.array([], pa.string()), "edge_id": pa.array([], pa.string()),
                      "content_id": pa.array([], pa.string()), "ranked": pa.array([], pa.list_(pa.string()))})
    if transitions is None:
        transitions = pd.DataFrame({"edge_id": [], "from_content_id": [], "to_content_id": [], "transitions": []})
    for path, table in ((layout.predictions(DATE, "users"), users),
                        (layout.predictions(DATE, "prefetch"), pa.Table.from_pandas(prefetch, preserve_index=False)),
                        (layout.predictions(DATE, "edge_demand"), pa.Table.from_pandas(demand, preserve_index=False)),
                        (layout.features(DATE, "transitions"),
                         pa.Table.from_pandas(transitions, preserve_index=False))):
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path / "part-0.parquet")


# Eight titles of 100 bytes; C01 -> C02 -> C03 is a series. Edge E1 starts with C01 (10
# expected requests) and C04 (1) in a cache of 200 bytes: full.
CATALOG = pd.DataFrame({"content_id": [f"C0{i}" for i in range(1, 9)], "size_bytes": [100] * 8,
                        "series_id": ["S1", "S1", "S1", None, None, None, None, None],
                        "episode": [1, 2, 3, None, None, None, None, None]})
DEMAND = pd.DataFrame({"edge_id": ["E1"] * 5, "content_id": ["C01", "C04", "C05", "C02", "C06"],
                       "score": [10.0, 1.0, 5.0, 2.0, 0.5], "rank": [1, 5, 2, 3, 4]})
PREFETCH = pd.DataFrame({"edge_id": ["E1", "E1"], "rank": [1, 2], "content_id": ["C01", "C04"],
                         "score": [10.0, 1.0], "size_bytes": [100, 100]})
TRANSITIONS = pd.DataFrame({"edge_id": ["E1", "E1"], "from_content_id": ["C05", "C05"],
                            "to_content_id": ["C07", "C06"], "transitions": [2, 7]})
