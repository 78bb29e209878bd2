"""How much of the per-title totals survives DP noise, at the level of one edge or one viewer.

Under DP the totals over the edges are a Gaussian mechanism (``edgecache.federated.totals``).
Noise that hides one viewer need only be as large as one viewer's clipped requests
(``requests_decayed_clipped``); noise that hides a whole edge must be as large as the
edge's whole vector. This bench builds a day's features for each workload family and, for
both levels at epsilon 8 and 4 (the totals' quarter of it, two releases a night, as a night
with opening edges spends it), reports the share of the titles with the largest true totals
(the top ``--pct`` %) that are still in the noisy top, over ``--draws`` noise draws. The
edge-level clip is the median edge's L2 norm, which leaves the smaller edges whole.

    python bench/dp_totals.py [--workloads catalog skewed churn] [--date 2025-04-09]

Results: bench/results/dp_totals.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import stage, write_results
from new_edge import FAMILIES  # the families the new edge is measured on

from edgecache.federated.privacy import noise_for_epsilon
from edgecache.layout import Layout
from edgecache.pipeline.features import VIEWER_CLIP

HERE = Path(__file__).resolve().parent


def kept(true: np.ndarray, noisy: np.ndarray, k: int) -> float:
    """The share of the top ``k`` of ``true`` that is in the top ``k`` of ``noisy``."""
    return len(set(np.argsort(-true)[:k]) & set(np.argsort(-noisy)[:k])) / k


def measure(popularity: pd.DataFrame, pct: float, draws: int) -> dict[str, Any]:
    exact = popularity.pivot_table(index="content_id", columns="edge_id", values="requests_decayed", fill_value=0.0)
    clipped = popularity.pivot_table(
        index="content_id", columns="edge_id", values="requests_decayed_clipped", fill_value=0.0
    ).reindex(index=exact.index, columns=exact.columns, fill_value=0.0)
    true = exact.to_numpy().sum(axis=1)
    k = max(1, int(len(true) * pct / 100))
    norms = np.linalg.norm(exact.to_numpy(), axis=0)
    edge_clip = float(np.median(norms))
    by_edge = (exact.to_numpy() * np.minimum(1.0, edge_clip / norms)).sum(axis=1)
    by_viewer = clipped.to_numpy().sum(axis=1)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {
        "edges": exact.shape[1],
        "titles": len(true),
        "top_titles": k,
        "edge_clip": round(edge_clip, 1),
        "viewer_clip": VIEWER_CLIP,
        "viewer_clip_keeps": round(float(by_viewer.sum() / true.sum()), 3),
        "viewer_clip_top_kept_without_noise": round(kept(true, by_viewer, k), 3),
    }
    for epsilon in (8, 4):
        z = noise_for_epsilon(epsilon / 4, 1.0, 2)
        for level, sums, clip in (("edge", by_edge, edge_clip), ("viewer", by_viewer, VIEWER_CLIP)):
            got = [kept(true, sums + rng.normal(0.0, z * clip, len(true)), k) for _ in range(draws)]
            out[f"top_kept_{level}_level_eps{epsilon}"] = round(float(np.mean(got)), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--date", default="2025-04-09")
    p.add_argument("--users", default="10000")
    p.add_argument("--pct", type=float, default=5.0)
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--out", type=Path, default=HERE / "results" / "dp_totals.json")
    args = p.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dp-totals-") as tmp:
        for workload in args.workloads:
            data = Path(tmp) / workload
            stage("generate", data, args.date, *FAMILIES[workload], "--users", args.users, "--edges", "8")
            stage("features", data, args.date)
            popularity = pd.read_parquet(Layout(data).features(args.date, "popularity"))
            results[workload] = measure(popularity, args.pct, args.draws)
            print(workload, results[workload], flush=True)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
