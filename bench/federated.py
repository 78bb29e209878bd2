"""Tables of bench/federated.sh: federated against central and local-only training, per
edge and overall, and the price of differential privacy.

    python bench/federated.py [SCENARIO] [--pct SIZE_PCT]
    python bench/federated.py --pooled SCENARIO...   (the smallest edges over several runs)

Hit ratio: object hit ratio of each edge's static predictive prefetch (and with admission
on miss) with a cache of SIZE_PCT % of the catalog's titles (default 5), replaying the
next day's requests; hit@10: share of viewers whose first title of the next day was in
their top 10.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgecache.federated.training import rounds_to_converge

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("local", "federated", "federated-secure", "federated-finetune", "federated-half", "central",
            "dp-eps8", "dp-eps4", "dp-eps1", "dp-eps4-clip0.25", "dp-eps4-clip4")


def load(scenario: str, variant: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    d = RESULTS / f"federated-{scenario}" / variant
    if not (d / "report.json").exists():
        return None
    return json.loads((d / "report.json").read_text()), json.loads((d / "predict_summary.json").read_text())


def table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def main(scenario: str = "default", pct: str = "5") -> int:
    got = {v: r for v in VARIANTS if (r := load(scenario, v)) is not None}
    if not got:
        print("no results: run bench/federated.sh first", file=sys.stderr)
        return 1

    def hit_ratio(report: dict, policy: str, edge: str | None = None) -> float:
        e = report["results"]["titles"][policy][pct]
        return (e if edge is None else e["per_edge"][edge])["object_hit_ratio"]

    rows = []
    for v, (rep, summ) in got.items():
        fed = summ["training"].get("federated") or {}
        eps = fed.get("epsilon_spent")
        rows.append([v, f"{hit_ratio(rep, 'predictive'):.3f}", f"{hit_ratio(rep, 'predictive+admission'):.3f}",
                     f"{rep['users']['hit@10']:.3f}", f"{summ['training']['scorer_auc_training_day']:.3f}",
                     "-" if eps is None else f"{eps:.2f}",
                     "-" if not fed or fed["noise_multiplier"] is None else f"{fed['noise_multiplier']:.2f}",
                     "-" if not fed else str(len(fed["rounds"])),
                     "-" if not fed else str(fed["update_bytes_per_round"]),
                     "-" if not fed else str(rounds_to_converge(fed["rounds"]) or "not yet"),
                     "-" if not fed else f"{sum(r['seconds'] for r in fed['rounds']):.1f}"])
    print(f"### Overall (hit ratio: cache of {pct} % of the titles)\n")
    print(table(["training", "predictive hit ratio", "+admission hit ratio", "hit@10", "training-day AUC",
                 "epsilon spent", "noise multiplier", "rounds", "bytes per round", "rounds to converge",
                 "round seconds (all)"], rows))

    base = next(iter(got.values()))[0]
    edges = sorted(base["users"]["per_edge"], key=lambda e: base["users"]["per_edge"][e]["evaluated"])
    shown = [v for v in ("local", "federated", "federated-finetune", "central") if v in got]
    rows = []
    for e in edges:
        rows.append([e, str(base["users"]["per_edge"][e]["evaluated"]), str(base["edges"][e]["requests"])]
                    + [f"{got[v][0]['users']['per_edge'][e]['hit@10']:.3f}" for v in shown]
                    + [f"{hit_ratio(got[v][0], 'predictive', e):.3f}" for v in shown])
    print("\n### Per edge, smallest first\n")
    print(table(["edge", "viewers", "requests", *[f"hit@10 {v}" for v in shown],
                 *[f"hit ratio {v}" for v in shown]], rows))

    if {"local", "federated", "central"} <= set(got):
        f, c, lo = got["federated"][0], got["central"][0], got["local"][0]
        print("\n### Targets\n")
        print(f"- federated - central, overall: hit ratio {100 * (hit_ratio(f, 'predictive') - hit_ratio(c, 'predictive')):+.1f} "
              f"points, hit@10 {100 * (f['users']['hit@10'] - c['users']['hit@10']):+.1f} points (target: within 2)")
        for e in edges[:3]:
            print(f"- {e}: federated - local, hit ratio "
                  f"{100 * (hit_ratio(f, 'predictive', e) - hit_ratio(lo, 'predictive', e)):+.1f} points, hit@10 "
                  f"{100 * (f['users']['per_edge'][e]['hit@10'] - lo['users']['per_edge'][e]['hit@10']):+.1f} "
                  "points (target: at least +5)")
    return 0


def pooled(scenarios: list[str], smallest: int = 3) -> int:
    """hit@10 of the ``smallest`` edges of each scenario taken together (hits over viewers),
    per scenario and over all of them, for local, federated and central training: one small
    edge has too few viewers for a difference of a few points to stand out from chance."""
    ways = ("local", "federated", "central")
    rows, hits, viewers = [], dict.fromkeys(ways, 0.0), 0
    overall = {w: [] for w in ways}
    for sc in scenarios:
        got = {w: load(sc, w) for w in ways}
        if any(v is None for v in got.values()):
            print(f"{sc}: missing results, skipped", file=sys.stderr)
            continue
        per = got["local"][0]["users"]["per_edge"]
        small = sorted(per, key=lambda e: per[e]["evaluated"])[:smallest]
        n = sum(per[e]["evaluated"] for e in small)
        h = {w: sum(got[w][0]["users"]["per_edge"][e]["hit@10"] * per[e]["evaluated"] for e in small) for w in ways}
        viewers += n
        for w in ways:
            hits[w] += h[w]
            overall[w].append(got[w][0]["users"]["hit@10"])
        rows.append([sc, ", ".join(f"{e} ({per[e]['evaluated']})" for e in small), str(n)]
                    + [f"{h[w] / n:.3f}" for w in ways] + [f"{100 * (h['federated'] - h['local']) / n:+.1f}"]
                    + [f"{got[w][0]['users']['hit@10']:.3f}" for w in ways])
    if not viewers:
        return 1
    p = hits["local"] / viewers
    se = 100 * (2 * p * (1 - p) / viewers) ** 0.5  # of a difference of two independent shares, at most
    rows.append(["all", "", str(viewers)] + [f"{hits[w] / viewers:.3f}" for w in ways]
                + [f"{100 * (hits['federated'] - hits['local']) / viewers:+.1f} (± {se:.1f})"]
                + [f"{sum(overall[w]) / len(overall[w]):.3f}" for w in ways])
    print(table(["run", f"{smallest} smallest edges (viewers)", "viewers", *[f"hit@10 {w}" for w in ways],
                 "federated - local (points)", *[f"overall hit@10 {w}" for w in ways]], rows))
    return 0


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", nargs="*", default=["default"], help="scenario(s) of bench/federated.sh")
    p.add_argument("--pct", default="5", help="cache size, in percent of the catalog's titles (default 5)")
    p.add_argument("--pooled", action="store_true", help="pool the smallest edges over the scenarios")
    args = p.parse_args(argv)
    if args.pooled:
        return pooled(args.scenario)
    if len(args.scenario) > 1:
        p.error("one scenario at a time without --pooled")
    return main(args.scenario[0], args.pct)


if __name__ == "__main__":
    sys.exit(cli())
