"""The demand model fitted centrally against the demand model federated (``--fl-demand true``).

For each workload family: generate day D's logs and history, build the features and the
next day's logs once, then run predict and evaluate once per variant on copies of the same
data directory. Prints, per variant, which model the gate deployed (and each candidate's
figure on the gate's day), the object hit ratio of the caches as deployed (the static prefetch
and with admission) at one cache size, the demand model's held-out loss, and the bytes of
demand updates per round. The ungated variants deploy the learned model whatever the gate
says, so their hit ratios are the demand model's own.

    python bench/federated_demand.py [--workloads catalog snm skewed] [--pct 5] [--users 10000]

Results: bench/results/federated_demand.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import read_json, stage, write_results

HERE = Path(__file__).resolve().parent
DATE, NEXT = "2025-04-12", "2025-04-13"
# Gated: what the night deploys. Ungated (--gate false): the learned model itself, deployed
# whatever the gate would say, so the next day measures the demand model and not a baseline.
VARIANTS = {
    "central": ["--training", "federated"],
    "federated": ["--training", "federated", "--fl-demand", "true"],
    "central, ungated": ["--training", "federated", "--gate", "false"],
    "federated, ungated": ["--training", "federated", "--fl-demand", "true", "--gate", "false"],
}


# Workload families: the catalog model, the shot noise model, and edges that differ 300-fold
# in size (the smallest has little data of its own: where sharing should matter most).
FAMILIES = {
    "catalog": ["--workload", "catalog"],
    "snm": ["--workload", "snm"],
    "skewed": ["--workload", "catalog", "--edge-size-ratio", "300"],
}



def measure(data: Path, pct: str) -> dict[str, Any]:
    summary = read_json(data / "predictions" / f"date={DATE}" / "summary.json")
    report = read_json(data / "evaluation" / f"date={DATE}" / "report.json")
    deployed = report.get("deployed", {}).get("policies", {})
    demand = summary["training"]["demand_fit"]
    fed = demand.get("federated") or {}
    last = (fed.get("rounds") or [{}])[-1].get("validation", {})
    rows = sum(v.get("rows") or 0 for v in last.values())
    held_out = sum((v.get("logloss") or 0) * (v.get("rows") or 0) for v in last.values()) / rows if rows else None
    titles = report["results"]["titles"]
    return {
        "gate_chose": (summary.get("gate", {}).get("prefetch") or {}).get("chosen"),
        "gate_figures": (summary.get("gate", {}).get("prefetch") or {}).get("figures"),
        "deployed_object_hit_ratio": {k: round(v["object_hit_ratio"], 4) for k, v in deployed.items()},
        f"predictive_object_hit_ratio_at_{pct}pct": round(titles["predictive"][pct]["object_hit_ratio"], 4),
        f"lru_object_hit_ratio_at_{pct}pct": round(titles["LRU"][pct]["object_hit_ratio"], 4),
        "demand_converged": demand["converged"],
        "demand_held_out_poisson_loss": None if held_out is None else round(held_out, 4),
        "demand_update_bytes_per_round": fed.get("update_bytes_per_round"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--pct", default="5", help="cache size in percent of the catalog's titles (default 5)")
    p.add_argument("--users", default="10000")
    p.add_argument("--out", type=Path, default=HERE / "results" / "federated_demand.json")
    args = p.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="federated-demand-") as tmp:
        for workload in args.workloads:
            base = Path(tmp) / workload / "base"
            stage("generate", base, DATE, *FAMILIES[workload], "--users", args.users)
            stage("features", base, DATE)
            stage("next-day-logs", base, DATE)
            for variant, flags in VARIANTS.items():
                data = Path(tmp) / workload / variant.replace(", ", "-")
                shutil.copytree(base, data)
                stage("predict", data, DATE, *flags)
                stage("evaluate", data, DATE, "--sizes", args.pct)
                results.setdefault(workload, {})[variant] = measure(data, args.pct)
                print(workload, variant, json.dumps(results[workload][variant]), flush=True)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
