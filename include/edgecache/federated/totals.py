"""Service-wide totals per title, summed across the edges by secure aggregation.

The demand model reads one figure that no edge holds alone: a title's decayed requests over
all edges (its ``global`` feature). Here each edge turns its own counts into a vector over
the catalog's titles (the catalog is public: every edge has it), masks it with the pairwise
masks of ``secagg``, and sends only that; the server adds the vectors up, the masks cancel,
and it learns the totals and nothing of one edge's counts. An edge's vector has one slot per
title whether or not the edge saw it, so even which titles an edge served stays hidden.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from edgecache.federated.secagg import Client, unmask_sum

MASKED_SCHEMA = "edge_id string, masked array<bigint>"


def masked_vectors(
    rows: DataFrame,
    titles: Sequence[str],
    value: str,
    private: Mapping[str, bytes],
    public: Mapping[str, bytes],
    round_id: int = 0,
) -> DataFrame:
    """What each edge sends (``MASKED_SCHEMA``): its sums of ``value`` per title of ``titles``,
    masked against every edge in ``public``, made by the Spark task that holds its rows."""
    index = {t: i for i, t in enumerate(titles)}

    def mask_edge(pdf: pd.DataFrame) -> pd.DataFrame:
        edge = pdf["edge_id"].iloc[0]
        vector = np.zeros(len(index))
        slots = pdf["content_id"].map(index)
        known = slots.notna().to_numpy()  # a title outside the catalog has no slot
        np.add.at(vector, slots[known].astype(np.int64).to_numpy(), pdf[value].to_numpy(dtype=np.float64)[known])
        ring = Client.from_private_bytes(edge, private[edge]).masked(vector, public, round_id)
        return pd.DataFrame({"edge_id": [edge], "masked": [ring.view(np.int64).tolist()]})

    return rows.select("edge_id", "content_id", value).groupBy("edge_id").applyInPandas(mask_edge, MASKED_SCHEMA)


def secure_totals(
    rows: DataFrame, titles: Sequence[str], value: str, round_id: int = 0
) -> tuple[dict[str, float], dict[str, Any]]:
    """Per title of ``titles``, the sum of ``value`` over every edge's (edge_id, content_id)
    ``rows``, and a report (edges, titles, bytes received). The driver, the server here, sees
    the edges' masked vectors only."""
    edges = sorted(r["edge_id"] for r in rows.select("edge_id").distinct().collect())
    if not edges:
        return dict.fromkeys(titles, 0.0), {"edges": [], "titles": len(titles), "bytes_received": 0}
    # Fresh key pairs for this sum; each edge's task uses its own private key only.
    clients = {e: Client(e) for e in edges}
    private = {e: c.private_bytes() for e, c in clients.items()}
    public = {e: c.public_key() for e, c in clients.items()}
    got = masked_vectors(rows, titles, value, private, public, round_id).collect()
    masked = {r["edge_id"]: np.array(r["masked"], dtype=np.int64).view(np.uint64) for r in got}
    total = unmask_sum(masked)
    report = {"edges": edges, "titles": len(titles), "bytes_received": sum(m.nbytes for m in masked.values())}
    return dict(zip(titles, total.tolist())), report
