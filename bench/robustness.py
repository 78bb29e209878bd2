"""The robustness matrix as one table: every shape that bench/robustness.sh ran, checked.

    python bench/robustness.py [--results bench/results/robustness] [--out docs/robustness.md]

For each shape and each cache size (1, 2, 5, 10 and 20 % of the catalog, caches sized in
titles, object hit ratio) it checks the three promises of the prediction engine:

- predictive+admission >= the best of LRU, LFU, S3-FIFO and SIEVE, within TOLERANCE;
- the static prefetch set >= min(0.9 x static oracle, best classic), within TOLERANCE, or
  where it is not, >= the recency-weighted popularity prefetch (and the table shows how far
  below the oracle any nightly set built from the past falls: see ``knowable`` below);
- the deployed per-viewer lists have hit@10 >= the edge-popularity baseline's.

Caches sized in bytes (byte hit ratio) are checked the same way and reported beside. The
smallest edge's own margin is shown too: a promise kept on the sum of the edges can still
be broken at a small one. Exit status 1 when a check fails (``--check``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLASSIC = ("LRU", "LFU", "S3-FIFO", "SIEVE")
TOLERANCE = 0.005
KINDS = {"titles": "object_hit_ratio", "bytes": "byte_hit_ratio"}


@dataclass
class Cell:
    """One shape at one size: the figures the checks read and their verdicts."""

    size: str
    adaptive: float
    static: float
    oracle: float
    popularity: float | None
    best_classic: float
    best_name: str
    smallest_edge_margin: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def adaptive_margin(self) -> float:
        return self.adaptive - self.best_classic

    @property
    def static_target(self) -> float:
        return min(0.9 * self.oracle, self.best_classic)


def _ratio(results: dict[str, Any], policy: str, size: str, metric: str, edge: str | None = None) -> float | None:
    cell = (results.get(policy) or {}).get(size)
    if cell is None:  # the policy does not run at that size (S3-FIFO at 1 or 2 titles)
        return None
    if edge is not None:
        cell = cell["per_edge"].get(edge)
        if cell is None:
            return None
    return float(cell[metric])


def _best_classic(results: dict[str, Any], size: str, metric: str, edge: str | None = None) -> tuple[float, str]:
    figures = {p: _ratio(results, p, size, metric, edge) for p in CLASSIC}
    ran = {p: v for p, v in figures.items() if v is not None}
    name = max(ran, key=lambda p: ran[p])
    return ran[name], name


def check_cells(report: dict[str, Any], kind: str) -> list[Cell]:
    """Every size of one evaluation report, checked (``kind``: caches in titles or bytes)."""
    metric, results = KINDS[kind], report["results"][kind]
    smallest = min(report["edges"], key=lambda e: report["edges"][e]["requests"])
    cells = []
    for size in sorted(results["oracle"], key=float):
        best, name = _best_classic(results, size, metric)
        cell = Cell(size, _ratio(results, "predictive+admission", size, metric) or 0.0,
                    _ratio(results, "predictive", size, metric) or 0.0,
                    _ratio(results, "oracle", size, metric) or 0.0,
                    _ratio(results, "popularity", size, metric), best, name)
        if len(report["edges"]) > 1:
            edge_best, _ = _best_classic(results, size, metric, smallest)
            adaptive = _ratio(results, "predictive+admission", size, metric, smallest)
            cell.smallest_edge_margin = None if adaptive is None else adaptive - edge_best
        if cell.adaptive_margin < -TOLERANCE:
            cell.failures.append(f"predictive+admission {cell.adaptive:.3f} < {name} {best:.3f}")
        if cell.static < cell.static_target - TOLERANCE:
            if cell.popularity is None or cell.static < cell.popularity - TOLERANCE:
                cell.failures.append(f"predictive {cell.static:.3f} < target {cell.static_target:.3f}"
                                     f" and < popularity {cell.popularity}")
        cells.append(cell)
    return cells


def load(results_dir: Path, date: str) -> dict[str, dict[str, Any]]:
    """shape -> its evaluation report, the predict summary and the generator flags."""
    shapes = {}
    for data in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        report = data / "evaluation" / f"date={date}" / "report.json"
        if not report.exists():
            continue
        summary = data / "predictions" / f"date={date}" / "summary.json"
        flags = data / "flags"
        users = data / "reference" / "users.parquet"
        viewers = {}
        if users.exists():
            import pyarrow.parquet as pq

            edges = pq.read_table(users, columns=["edge_id"]).column("edge_id").to_pylist()
            viewers = {e: edges.count(e) for e in set(edges)}
        shapes[data.name] = {
            "viewers": viewers,
            "report": json.loads(report.read_text()),
            "summary": json.loads(summary.read_text()) if summary.exists() else {},
            "flags": flags.read_text().strip() if flags.exists() else "",
        }
    return shapes


def _f(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _gate_line(summary: dict[str, Any]) -> str:
    gate = summary.get("gate") or {}
    parts = []
    for stage in ("prefetch", "lists"):
        verdict = gate.get(stage)
        if not verdict:
            parts.append(f"{stage}: no gate")
            continue
        figures = ", ".join(f"{m} {v:.3f}" for m, v in sorted(verdict["figures"].items()))
        rejected = "; ".join(f"{m} rejected: {why}" for m, why in verdict.get("rejected", {}).items())
        parts.append(f"{stage}: **{verdict['chosen']}** ({figures}{'; ' + rejected if rejected else ''})")
    return " · ".join(parts)


def render(shapes: dict[str, dict[str, Any]], date: str) -> tuple[str, str, int]:
    """The markdown page, its one-line headline and the number of failed checks."""
    cache_failed, cells_checked = 0, 0
    worst_adaptive: tuple[float, str] = (1.0, "")
    worst_static: tuple[float, str] = (1.0, "")
    lists_ok = 0
    summary_rows, details = [], []
    sizes: list[str] = []
    for shape, found in shapes.items():
        report = found["report"]
        users, base = report["users"], report["users_baseline"]
        lists_pass = users["hit@10"] >= base["hit@10"]
        lists_ok += lists_pass
        by_kind = {kind: check_cells(report, kind) for kind in KINDS}
        sizes = [c.size for c in by_kind["titles"]]
        row = [shape]
        for cell in by_kind["titles"]:
            cells_checked += 1
            cache_failed += bool(cell.failures)
            worst_adaptive = min(worst_adaptive, (cell.adaptive_margin, f"{shape} at {cell.size} %"))
            worst_static = min(worst_static, (cell.static - cell.static_target, f"{shape} at {cell.size} %"))
            mark = "" if not cell.failures else " ✗"
            row.append(f"{_f(cell.adaptive_margin, True)} / {_f(cell.static - cell.static_target, True)}{mark}")
        row.append(f"{users['hit@10']:.3f} vs {base['hit@10']:.3f}{'' if lists_pass else ' ✗'}")
        summary_rows.append("| " + " | ".join(row) + " |")

        smallest = min(report["edges"], key=lambda e: report["edges"][e]["requests"])
        viewers = found["viewers"].get(smallest)
        lines = [f"### {shape}", "", f"Generator flags: `{found['flags'] or '(defaults)'}`. "
                 f"{report['requests_replayed']:,} requests at {len(report['edges'])} edge(s), "
                 f"{report['catalog']['titles']:,} titles; the smallest edge, {smallest}, had "
                 f"{report['edges'][smallest]['requests']:,} requests"
                 + (f" from {viewers:,} viewers." if viewers is not None else "."), "",
                 f"Model gate: {_gate_line(found['summary'])}.", ""]
        for kind, title in (("titles", "object hit ratio, caches in titles"),
                            ("bytes", "byte hit ratio, caches in bytes")):
            lines += [f"{title.capitalize()}:", "",
                      "| size | predictive+admission | best classic | predictive | 0.9 × oracle | popularity"
                      " | oracle | smallest edge: P+A − best classic | checks |",
                      "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
            for cell in by_kind[kind]:
                if kind == "bytes":
                    cache_failed += bool(cell.failures)
                    cells_checked += 1
                lines.append(
                    f"| {cell.size} % | {_f(cell.adaptive)} | {cell.best_name} {_f(cell.best_classic)}"
                    f" | {_f(cell.static)} | {_f(0.9 * cell.oracle)} | {_f(cell.popularity)} | {_f(cell.oracle)}"
                    f" | {_f(cell.smallest_edge_margin, True)} | {'; '.join(cell.failures) or 'pass'} |")
            lines.append("")
        lines += [f"Per-viewer lists: hit@10 {users['hit@10']:.3f} against the edge-popularity baseline's "
                  f"{base['hit@10']:.3f} ({users['evaluated']:,} viewers).", ""]
        details += lines

    n = len(shapes)
    headline = (f"Robustness matrix, {n} workload shapes x {len(sizes)} cache sizes: "
                f"{cells_checked - cache_failed} of {cells_checked} cache cells and {lists_ok} of {n} "
                f"list checks pass. Worst predictive+admission margin over the best classic policy "
                f"{worst_adaptive[0]:+.3f} ({worst_adaptive[1]}); worst static prefetch margin over "
                f"min(0.9 x oracle, best classic) {worst_static[0]:+.3f} ({worst_static[1]}).")
    header = ["shape"] + [f"{s} %" for s in sizes] + ["hit@10 vs baseline"]
    page = [
        "# Robustness matrix",
        "",
        f"Made by `bench/robustness.sh` (the nightly pipeline on each shape, predictions of {date} "
        "replayed on the day after) and `bench/robustness.py` (the checks and this page).",
        "",
        headline,
        "",
        "Each cell of the first table is *predictive+admission minus the best classic policy* / "
        "*static prefetch minus min(0.9 × static oracle, best classic)*, object hit ratio with caches "
        f"sized in titles. A promise holds when the figure is ≥ −{TOLERANCE}; ✗ marks a cell that "
        "fails (a static shortfall passes when the prefetch set still beats the recency-weighted "
        "popularity prefetch).",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
        *summary_rows,
        "",
        "## Each shape",
        "",
        *details,
    ]
    return "\n".join(page), headline, cache_failed + n - lists_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("bench/results/robustness"))
    parser.add_argument("--date", default="2025-04-12")
    parser.add_argument("--out", type=Path, default=Path("docs/robustness.md"))
    parser.add_argument("--check", action="store_true", help="exit 1 when a check fails")
    args = parser.parse_args(argv)
    shapes = load(args.results, args.date)
    if not shapes:
        print(f"no evaluated shapes under {args.results}; run bench/robustness.sh first", file=sys.stderr)
        return 2
    page, headline, failed = render(shapes, args.date)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page + "\n")
    print(headline)
    print(f"wrote {args.out}")
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
