"""A new edge's first nights: local-only, federated and central models, with and without DP.

For each workload family, one edge opens on OPEN (``--new-edges 1 --new-edge-day OPEN``),
taking about as many viewers as the middle edge has, with a taste of its own. On the nights
0, 1, 2, 3 and 7 of its life (night n is the evening of day OPEN + n - 1, the predictions are
for the next day; night 0 is the evening before it opens, when it has no logs and predict is
told it opens with ``--opening-edges``) the bench runs predict once per variant, each ungated
so the next day measures the model itself and not a baseline the gate might prefer, then
evaluate. It reports, for the new edge and for the mature edge of about the same size (the
middle edge):

- the cache hit ratio at ``--pct`` % of the titles: the titles the model ranks first, held
  all day (the ``predictive`` static prefetch), the same with admission on a miss, and LRU
  and the recency prefetch beside it (on night 0 an edge without a ranking starts empty:
  LRU is what local-only can run there);
- hit@10 of the viewers' lists.

Variants: local (each edge alone: its own scorer and demand model, without the service-wide
counts; an edge with no rows of its own ranks by its own recent requests), federated (the
scorer and the demand model by FedAvg), federated with DP at epsilon 8 and 4 (the two models
share the budget), the same with per-edge fine-tuning (which spends no budget), and central
(every edge's rows pooled). The variants named "gated" let the model gate choose what is
deployed, as a night does.

On the nights of ``--aged-nights`` the bench also measures the new edge's aged twin: the same
workload with the new edge opened ``AGED_DAYS`` earlier: the same viewers at the same edge,
with the same taste, their requests drawn the same way on the measured day (not request for
request), but with a full window of history behind the edge (variant "federated, aged
twin"). The middle edge differs from the new one in taste as well as age; the twin differs
in age.

    python bench/new_edge.py [--workloads catalog skewed] [--nights 0 1 2 3 7] [--users 10000]
                             [--aged-nights 7]

Results: bench/results/new_edge.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import read_json, stage, write_results

from edgecache.layout import shift_day

HERE = Path(__file__).resolve().parent
OPEN = "2025-04-10"
AGED_DAYS = 28  # the aged twin's edge opened this many days before OPEN
EDGES = 8
NEW_EDGE, MATURE_EDGE = f"edge-{EDGES + 1:02d}", f"edge-{EDGES // 2 + 1:02d}"  # the middle edge: the same size

FEDERATED = ["--training", "federated", "--fl-demand", "true"]
DP8, DP4 = ["--fl-epsilon", "8"], ["--fl-epsilon", "4"]
# Fine-tuning stays at the edge, so it spends none of the budget: each edge ranks by its own
# model (fitted from scratch when the global one never settles).
TUNED = ["--fl-fine-tune-steps", "3"]
GATED = ["--gate", "true"]  # what a night deploys: the model gate chooses
VARIANTS = {
    "local": ["--training", "local"],
    "federated": FEDERATED,
    "federated, gated": FEDERATED + GATED,
    "federated, DP eps 8": FEDERATED + DP8,
    "federated, DP eps 4": FEDERATED + DP4,
    "central": ["--training", "central"],
    "federated, DP eps 8, fine-tuned": FEDERATED + DP8 + TUNED,
    "federated, DP eps 8, fine-tuned, gated": FEDERATED + DP8 + TUNED + GATED,
    "federated, DP eps 4, fine-tuned": FEDERATED + DP4 + TUNED,
    "federated, DP eps 8, gated": FEDERATED + DP8 + GATED,
}

# Workload families: the catalog model, edges 30-fold apart in size (the middle edge, and so the
# new one, has fewer viewers), a catalog where new titles arrive every day (high churn), and the
# shot noise model (popularity made of bursts that start and fade).
FAMILIES = {
    "catalog": [],
    "skewed": ["--edge-size-ratio", "30"],
    "churn": ["--releases-per-day", "2", "--titles", "5000"],
    "snm": ["--workload", "snm"],
}


def day(n: int) -> str:
    """The date of night ``n`` of the new edge (night 1: the day it opens)."""
    return shift_day(OPEN, n - 1)


def prepare(data: Path, date: str, flags: list[str]) -> None:
    """Generate the days up to ``date``; the features of the day before train, those of ``date`` predict."""
    stage("generate", data, date, *flags)
    stage("features", data, shift_day(date, -1))
    stage("features", data, date)
    stage("next-day-logs", data, date)


def edge_figures(report: dict[str, Any], edge: str, pct: str) -> dict[str, Any]:
    titles = report["results"]["titles"]

    def ratio(policy: str) -> float | None:
        entry = (titles.get(policy) or {}).get(pct)
        figures = entry["per_edge"].get(edge) if entry else None
        return None if figures is None else round(figures["object_hit_ratio"], 4)

    users = report["users"].get("per_edge", {}).get(edge, {})
    return {
        "age_days": report["edges"].get(edge, {}).get("age_days"),
        "requests": report["edges"].get(edge, {}).get("requests"),
        f"predictive_at_{pct}pct": ratio("predictive"),
        f"predictive+admission_at_{pct}pct": ratio("predictive+admission"),
        f"LRU_at_{pct}pct": ratio("LRU"),
        f"recency_prefetch_at_{pct}pct": ratio("popularity"),
        # the best static set for the day, chosen knowing its requests: no prefetch gets more
        f"oracle_at_{pct}pct": ratio("oracle"),
        "hit@10": None if "hit@10" not in users else round(users["hit@10"], 4),
    }


def measure(data: Path, date: str, pct: str) -> dict[str, Any]:
    summary = read_json(data / "predictions" / f"date={date}" / "summary.json")
    report = read_json(data / "evaluation" / f"date={date}" / "report.json")
    demand = summary["training"]["demand_fit"]
    fed = demand.get("federated") or {}
    return {
        "deployed": summary["deployed"]["prefetch"],
        # the gate's figures for the sets on the training day (absent when ungated)
        "gate_figures": (summary["gate"].get("prefetch") or {}).get("figures"),
        "new_edge": edge_figures(report, NEW_EDGE, pct),
        "mature_edge": edge_figures(report, MATURE_EDGE, pct),
        "all_edges_predictive": round(report["results"]["titles"]["predictive"][pct]["object_hit_ratio"], 4),
        "demand_converged": demand["converged"],
        "new_edge_has_own_demand_model": NEW_EDGE in (summary["models"].get("demand_per_edge") or {}),
        "demand_update_bytes_per_round": fed.get("update_bytes_per_round"),
        "epsilon_spent": {
            "scorer": (summary["training"].get("federated") or {}).get("epsilon_spent"),
            "demand": fed.get("epsilon_spent"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", default=["catalog", "skewed"], choices=list(FAMILIES))
    p.add_argument("--nights", nargs="*", type=int, default=[0, 1, 2, 3, 7])
    p.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if "gated" not in v], choices=list(VARIANTS))
    p.add_argument("--pct", default="5", help="cache size in percent of the catalog's titles (default 5)")
    p.add_argument("--users", default="10000")
    p.add_argument("--aged-nights", nargs="*", type=int, default=[], help="nights to measure the aged twin on")
    p.add_argument("--out", type=Path, default=HERE / "results" / "new_edge.json")
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        help="more generator flags for every family, e.g. --extra=--seed --extra=3 (a held-out workload)",
    )
    args = p.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    if args.out.exists():  # a run for other families keeps what an earlier run measured
        results = read_json(args.out)
    with tempfile.TemporaryDirectory(prefix="new-edge-") as tmp:
        for workload in args.workloads:
            data = Path(tmp) / workload
            flags = [*FAMILIES[workload], *args.extra, "--users", args.users, "--edges", str(EDGES)]
            flags += ["--new-edges", "1", "--new-edge-day", OPEN]
            results.setdefault(workload, {})["flags"] = flags
            for night in sorted(args.nights):
                date = day(night)
                prepare(data, date, flags)
                opening = ["--opening-edges", NEW_EDGE] if night == 0 else []
                for variant in args.variants:
                    # Ungated unless the variant says: the night's model is deployed, so the next day measures it.
                    gate = [] if "--gate" in VARIANTS[variant] else ["--gate", "false"]
                    stage("predict", data, date, *VARIANTS[variant], *opening, *gate)
                    stage("evaluate", data, date, "--sizes", args.pct)
                    got = measure(data, date, args.pct)
                    results[workload].setdefault(f"night {night}", {})[variant] = got
                    print(workload, f"night {night}", variant, json.dumps(got), flush=True)
            twin = [*flags[: flags.index("--new-edge-day")], "--new-edge-day", shift_day(OPEN, -AGED_DAYS)]
            aged = Path(tmp) / f"{workload}-aged"
            for night in sorted(args.aged_nights):
                date = day(night)
                prepare(aged, date, twin)
                stage("predict", aged, date, *FEDERATED, "--gate", "false")
                stage("evaluate", aged, date, "--sizes", args.pct)
                got = measure(aged, date, args.pct)
                results[workload].setdefault(f"night {night}", {})["federated, aged twin"] = got
                print(workload, f"night {night}", "aged twin", json.dumps(got), flush=True)
            write_results(args.out, results)  # after each family: a stopped run keeps what it finished
    return 0


if __name__ == "__main__":
    sys.exit(main())
