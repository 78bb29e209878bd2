"""A small day for the delivery path's tests: eight titles, one edge, a full cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from edgecache.serving.warm_cache import day_start
from edgecache.evaluation.report import Catalog
from edgecache.layout import Layout
from edgecache.evaluation.policies import Ranking, Trace

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


@dataclass
class SeededDay:
    requests: list[tuple[str, str, float]]  # viewer, title, time: edge E1's day in order
    capacity: int  # bytes
    trace: Trace  # the same requests for the evaluation's policies
    ranking: Ranking  # the demand ranking, with scores and next episodes


def seeded_day(root: Path, seed: int = 3, n: int = 3000, shuffled: bool = False) -> SeededDay:
    """A Zipf day at edge E1 over 60 titles (six series of six episodes, then movies) of
    50-300 bytes, a prediction with noise and gaps (``shuffled``: the same scores given to
    random titles, a useless prediction), and a cache of 1,500 bytes; its files are written
    under ``root`` for the warm."""
    rng = np.random.default_rng(seed)
    n_titles, capacity = 60, 1500
    ids = [f"C{i:05d}" for i in range(1, n_titles + 1)]
    sizes = rng.integers(50, 300, n_titles)
    catalog = pd.DataFrame({"content_id": ids, "size_bytes": sizes,
                            "series_id": [f"S{i // 6}" if i < 36 else None for i in range(n_titles)],
                            "episode": [i % 6 + 1 if i < 36 else None for i in range(n_titles)]})
    popularity = rng.permutation(n_titles) + 1.0
    expected = (popularity ** -0.9) * 400  # expected requests of a title
    predicted = np.where(rng.random(n_titles) < 0.8, expected * rng.lognormal(0, 0.5, n_titles), 0.0)
    if shuffled:  # its own stream: the requests stay those of the unshuffled day
        predicted = predicted[np.random.default_rng(seed + 1).permutation(n_titles)]
    order = np.lexsort((np.arange(n_titles), -predicted))
    order = order[predicted[order] > 0]
    cat = Catalog.from_frame(catalog)
    ranking = Ranking(cat.obj_id[order], cat.size[order], predicted[order], cat.sequels)
    warm_set = ranking.top(capacity, unit_size=False)
    demand = pd.DataFrame({"edge_id": "E1", "content_id": [ids[i] for i in order], "score": predicted[order],
                           "rank": np.arange(1, len(order) + 1)})
    prefetch = pd.DataFrame({"edge_id": "E1", "rank": np.arange(1, len(warm_set.obj_id) + 1),
                             "content_id": [ids[int(o) - 1] for o in warm_set.obj_id],
                             "score": warm_set.score, "size_bytes": warm_set.size})
    write_day(root, catalog, prefetch, demand)
    requested = rng.choice(n_titles, size=n, p=expected / expected.sum())
    times = T0 + np.sort(rng.integers(0, 86400, n))
    obj = cat.obj_id[requested]
    return SeededDay([(f"U{i % 97}", ids[t], float(ts)) for i, (t, ts) in enumerate(zip(requested, times))],
                     capacity, Trace(obj, cat.sizes(obj), times), ranking)
