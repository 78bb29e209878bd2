"""Side by side: the learned model against the simple baseline, from evaluate_alphas.sh's reports.

    python bench/models.py [ALPHA ...]

Prints, per alpha, the object hit ratio at 5 % of the catalog (caches in titles) of static
predictive prefetch, prefetch plus admission, the best classic policy and the static
oracle; over all sizes (1-20 %), the lowest share of the oracle reached by predictive and
by predictive+admission (object hit ratio in titles, byte hit ratio in bytes) and the
smallest margin of predictive over the best classic policy; and the per-user hit@10 of
each model and of the edge-popularity baseline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CLASSIC = ("LRU", "LFU", "S3-FIFO", "SIEVE")


def row(alpha: str, model: str) -> list[str]:
    r = json.loads((RESULTS / f"evaluation-alpha{alpha}-{model}" / "report.json").read_text())
    t = r["results"]["titles"]

    def at(name: str, pct: str) -> float:
        v = t[name][pct]
        return float("nan") if v is None else v["object_hit_ratio"]

    best = max(CLASSIC, key=lambda n: at(n, "5"))
    pcts = list(map(str, r["sizes_pct"]))
    b = r["results"]["bytes"]
    adm_titles = min(at("predictive+admission", p) / at("oracle", p) for p in pcts)
    adm_bytes = min(b["predictive+admission"][p]["byte_hit_ratio"] / b["oracle"][p]["byte_hit_ratio"] for p in pcts)
    margins = [at("predictive", p) - max(at(n, p) for n in CLASSIC) for p in map(str, r["sizes_pct"])]  # titles
    return [alpha, model, f"{at('predictive', '5'):.3f}", f"{at('predictive+admission', '5'):.3f}",
            f"{at(best, '5'):.3f} ({best})", f"{at('oracle', '5'):.3f}",
            f"{min(at('predictive', p) / at('oracle', p) for p in pcts):.3f}", f"{min(margins):+.3f}",
            f"{adm_titles:.3f} / {adm_bytes:.3f}",
            f"{r['users']['hit@10']:.3f}", f"{r['users_baseline']['hit@10']:.3f}",
            f"{r['users']['hit@10'] / r['users_baseline']['hit@10']:.2f}"]


def main(alphas: list[str]) -> int:
    head = ["alpha", "model", "predictive 5 %", "+admission 5 %", "best classic 5 %", "oracle 5 %",
            "predictive / oracle (min, 1-20 %)", "min margin over classic (1-20 %)",
            "+admission / oracle (min, 1-20 %; titles / bytes)", "hit@10", "edge-popularity hit@10",
            "hit@10 ratio"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for alpha in alphas or ["0.7", "0.9", "1.1"]:
        for model in ("learned", "simple"):
            print("| " + " | ".join(row(alpha, model)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
