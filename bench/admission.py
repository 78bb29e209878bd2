"""Benchmark: ``predictive+admission`` against the best classic policy, trace by trace.

    python bench/admission.py [--quick] [--workers N] [--seed S] [--only FAMILY ...] [--bytes-metric]

The promise is that the deployed cache is never worse than the classic cache an operator
would otherwise run, whatever the night's predictions were worth. This replays, without
Spark, several trace families at cache sizes of 1, 2, 5, 10 and 20 % of the catalog (in
titles and in bytes) through LRU, LFU, S3-FIFO and SIEVE (libCacheSim) and through
``predictive+admission`` (new: its rankings compete for the lead; old: the prediction
always leads, exactly the policy before the rankings) fed with predictions of several
qualities:

- good: ``yesterday`` (the previous day's requests at the edge: the project's simple
  model) and ``oracle`` (the replayed day's own counts, the best a model could say);
- useless: ``random`` (a random order, random scores), ``reversed`` (yesterday's order
  upside down, the rarest title with the highest score), ``idorder`` (the catalog in id
  order with confident, decreasing scores: a degenerate model) and ``constant`` (a
  random order, every score equal).

Families: the project's generator (``edgecache.simulate.workload``) at alpha 0.7, 0.9 and 1.1,
with per-edge traces; shapes built here that break its assumptions: IRM Zipf with no
temporal locality, shot noise (titles that arrive, peak and die within hours or days) and
one-day spikes over an IRM base; and the generator's own shapes: a very small catalog (1 %
is two titles), a single tiny edge of a few hundred requests, movies only, high churn, and
its shot noise model (``edgecache.simulate.snm``) with exponential and with short flat bursts.

Each row is one family, mode and prediction; a cell gives the new policy's hit ratio minus
the best classic's at that size, and the old policy's in brackets (object hit ratio; with
``--bytes-metric`` the byte hit ratio in the byte mode). A summary counts the cells where
useless predictions fall more than 0.005 below the best classic. Results go to
bench/results/admission[-seedS][-bytes].json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from edgecache.evaluation.report import SIZES_PCT, Catalog, Requests, capacities, edge_traces
from edgecache.layout import write_json_atomic
from edgecache.evaluation.policies import STEPS, Hits, Ranking, Trace, default_workers, plan, run_step

HERE = Path(__file__).resolve().parent
CLASSICS = ("LRU", "LFU", "S3-FIFO", "SIEVE")
OURS = "predictive+admission"
GOOD = ("yesterday", "oracle")
USELESS = ("random", "reversed", "idorder", "constant")
DAY = 1744502400  # 2025-04-13 00:00 UTC
HD_BYTES_PER_SEC = 600_000


@dataclass
class Family:
    """One trace family: per-edge traces of the replayed day, each edge's request counts of
    the day before (the ``yesterday`` prediction) and the catalog."""

    name: str
    catalog: Catalog
    traces: dict[str, Trace]
    yesterday: dict[str, np.ndarray]  # edge -> per-title counts, aligned with catalog.obj_id


# --- trace families ------------------------------------------------------------------------


def counts_of(catalog: Catalog, ids: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(catalog.obj_id, ids), minlength=catalog.titles).astype(np.float64)


def generator_family(alpha: float, quick: bool, **knobs: float | str) -> Family:
    """Two days of the project's generator; the second is replayed, the first predicts it."""
    from edgecache.settings import WorkloadParams
    from edgecache.simulate.workload import build_workload, generate_chunk, n_chunks

    params = WorkloadParams(alpha=alpha, bad_rate=0.0, **({"events": 12000} if quick else {}) | knobs)
    wl = build_workload(params)
    catalog = Catalog.from_frame(wl.catalog)
    days = []
    for date in ("2025-04-12", "2025-04-13"):
        batches = [generate_chunk(wl, date, c) for c in range(n_chunks(wl))]
        frames = []
        for b in batches:
            cid = pc.extract_regex(b.column("value"), r'"content_id": "(?P<c>[^"]+)"').field("c")
            frames.append(pd.DataFrame({"edge_id": b.column("edge_id").to_numpy(zero_copy_only=False),
                                        "user_id": b.column("user_idx").to_numpy(),
                                        "content_id": cid.to_numpy(zero_copy_only=False),
                                        "ts": b.column("ts").to_numpy().astype(np.int64) + DAY}))
        traces, _ = edge_traces(Requests.from_frame(pd.concat(frames, ignore_index=True)), catalog)
        days.append(traces)
    before, today = days
    yesterday = {e: counts_of(catalog, before[e].obj_id) if e in before else np.zeros(catalog.titles)
                 for e in today}
    label = "gen" + "".join(f" {k}={v}" for k, v in knobs.items())
    return Family(f"{label} a={alpha}", catalog, today, yesterday)


def synthetic_catalog(titles: int, rng: np.random.Generator) -> Catalog:
    """Movies only, 20-160 minutes at HD bitrate."""
    minutes = np.clip(rng.lognormal(np.log(60), 0.5, titles), 20, 160).astype(np.int64)
    return Catalog.from_frame(pd.DataFrame({"content_id": [f"C{i:05d}" for i in range(1, titles + 1)],
                                            "size_bytes": minutes * 60 * HD_BYTES_PER_SEC}))


def _trace(catalog: Catalog, ids: np.ndarray, secs: np.ndarray) -> Trace:
    order = np.argsort(secs, kind="stable")
    ids = catalog.obj_id[ids[order]]
    return Trace(ids, catalog.sizes(ids), DAY + secs[order].astype(np.int64))


def irm_family(seed: int, titles: int = 1000, requests: int = 20000, alpha: float = 0.8) -> Family:
    """Independent requests from a fixed Zipf popularity: no temporal locality at all."""
    rng = np.random.default_rng(seed)
    catalog = synthetic_catalog(titles, rng)
    p = (np.arange(1, titles + 1) ** -alpha)[rng.permutation(titles)]
    p /= p.sum()
    today = rng.choice(titles, size=requests, p=p)
    before = rng.choice(titles, size=requests, p=p)
    return Family(f"irm a={alpha}", catalog, {"edge": _trace(catalog, today, rng.integers(0, 86400, requests))},
                  {"edge": np.bincount(before, minlength=titles).astype(np.float64)})


def shot_noise_family(seed: int, titles: int = 3000, requests: int = 20000) -> Family:
    """Titles are born over four days; each one's demand jumps at birth and decays with a
    lifetime of hours to days: today's popular titles are mostly yesterday's unknowns."""
    rng = np.random.default_rng(seed)
    catalog = synthetic_catalog(titles, rng)
    birth = rng.uniform(-3 * 86400, 86400, titles)
    life = np.clip(rng.lognormal(np.log(8 * 3600), 1.0, titles), 1800, 5 * 86400)
    volume = rng.pareto(1.2, titles) + 1

    def day(lo: float) -> tuple[np.ndarray, np.ndarray]:
        hi = lo + 86400
        a = np.clip(lo - birth, 0, None)  # time since birth at the day's start
        b = np.clip(hi - birth, 0, None)
        mass = volume * (np.exp(-a / life) - np.exp(-b / life))
        n = rng.poisson(mass / mass.sum() * requests)
        ids = np.repeat(np.arange(titles), n)
        # inverse CDF of the truncated exponential between a and b
        ea, eb = np.exp(-a[ids] / life[ids]), np.exp(-b[ids] / life[ids])
        u = rng.random(len(ids))
        since = -life[ids] * np.log(ea - u * (ea - eb))
        return ids, np.clip(birth[ids] + since - lo, 0, 86399)

    ids, secs = day(0.0)
    before, _ = day(-86400.0)
    return Family("shot-noise", catalog, {"edge": _trace(catalog, ids, secs)},
                  {"edge": np.bincount(before, minlength=titles).astype(np.float64)})


def spikes_family(seed: int, titles: int = 1000, requests: int = 15000, spikes: int = 6,
                  per_spike: int = 500) -> Family:
    """An IRM Zipf base and a few tail titles that each take hundreds of requests within two
    hours (a live event, a news item): yesterday knew nothing of them."""
    rng = np.random.default_rng(seed)
    catalog = synthetic_catalog(titles, rng)
    p = (np.arange(1, titles + 1) ** -0.8)[rng.permutation(titles)]
    p /= p.sum()
    base = rng.choice(titles, size=requests, p=p)
    secs = rng.integers(0, 86400, requests)
    tail = np.argsort(p)[: titles // 2]
    hot = rng.choice(tail, size=spikes, replace=False)
    starts = rng.integers(0, 86400 - 7200, spikes)
    ids = np.concatenate([base, np.repeat(hot, per_spike)])
    secs = np.concatenate([secs, (np.repeat(starts, per_spike) + rng.exponential(1800, spikes * per_spike)
                                  ).clip(0, 86399).astype(np.int64)])
    before = rng.choice(titles, size=requests, p=p)
    return Family("spikes", catalog, {"edge": _trace(catalog, ids, secs)},
                  {"edge": np.bincount(before, minlength=titles).astype(np.float64)})


# --- predictions -------------------------------------------------------------------------------


def rankings_for(family: Family, kind: str, seed: int) -> dict[str, Ranking]:
    """Per edge, a prediction of quality ``kind`` (scores in requests per day)."""
    cat = family.catalog
    n = cat.titles
    out = {}
    for i, (edge, trace) in enumerate(sorted(family.traces.items())):
        rng = np.random.default_rng([seed, i, len(kind)])
        yesterday = family.yesterday[edge]
        total = max(float(yesterday.sum()), 1.0)
        if kind == "yesterday":
            pos = np.lexsort((cat.obj_id, -yesterday))
            pos = pos[yesterday[pos] > 0]
            score = yesterday[pos]
        elif kind == "oracle":
            today = counts_of(cat, trace.obj_id)
            pos = np.lexsort((cat.obj_id, -today))
            pos = pos[today[pos] > 0]
            score = today[pos]
        elif kind == "random":
            pos = rng.permutation(n)
            score = np.sort(rng.exponential(total / n, n))[::-1]
        elif kind == "reversed":
            pos = np.lexsort((cat.obj_id, yesterday))  # rarest first
            score = np.sort(yesterday)[::-1]  # ... with the top title's score
        elif kind == "idorder":
            pos = np.arange(n)
            score = np.sort(yesterday)[::-1]  # confident scores, meaningless order
        elif kind == "constant":
            pos = rng.permutation(n)
            score = np.full(n, total / n)
        else:
            raise ValueError(kind)
        out[edge] = Ranking(cat.obj_id[pos], cat.size[pos], np.asarray(score, dtype=np.float64), cat.sequels)
    return out


# --- the replay ---------------------------------------------------------------------------

VARIANTS = {"new": None, "old": ("pred",)}  # old: pred leads always, exactly the policy before the rankings


def run_steps(steps: list, workers: int) -> list[Hits | None]:
    """Run planned replays (libCacheSim or our kernel) over ``workers`` processes."""
    todo = [(i, s) for i, s in enumerate(steps) if isinstance(s, STEPS)]
    out: list[Hits | None] = [None if isinstance(s, STEPS) else s for s in steps]
    with ProcessPoolExecutor(max(1, workers), mp_context=get_context("spawn")) as pool:
        todo.sort(key=lambda r: -r[1].requests)  # longest first keeps the workers busy to the end
        for (i, _), hits in zip(todo, pool.map(run_step, [s for _, s in todo], chunksize=4)):
            out[i] = hits
    return out


def run_family(family: Family, kinds: tuple[str, ...], workers: int, seed: int) -> dict:
    """Hits per mode, size and policy (classics once; ours per prediction, new and old),
    summed over edges."""
    caps = capacities(family.catalog, SIZES_PCT)
    largest = int(family.catalog.size.max())
    rankings = {k: rankings_for(family, k, seed) for k in kinds}
    with tempfile.TemporaryDirectory(prefix="edgecache-admission-") as tmp:
        written = {e: t.with_file(Path(tmp) / f"{i}.oracleGeneral")
                   for i, (e, t) in enumerate(sorted(family.traces.items()))}
        steps, keys = [], []
        for mode in ("titles", "bytes"):
            for pct, cap in caps[mode].items():
                for edge, t in written.items():
                    trace = t.in_titles() if mode == "titles" else t
                    for name in CLASSICS:
                        steps.append(plan(name, trace, cap, None, largest))
                        keys.append((mode, pct, name))
                    for k in kinds:
                        step = plan(OURS, trace, cap, rankings[k][edge], largest)
                        for variant, lead in VARIANTS.items():
                            steps.append(step if lead is None or not isinstance(step, STEPS) else replace(step, lead=lead))
                            keys.append((mode, pct, f"{variant}|{k}"))
        hits = run_steps(steps, workers)
    sums: dict = {}
    for (mode, pct, name), h in zip(keys, hits):
        cell = sums.setdefault(mode, {}).setdefault(str(pct), {})
        if h is None or cell.get(name, Hits(0, 0, 0, 0)) is None:
            cell[name] = None
        else:
            cell[name] = cell.get(name, Hits(0, 0, 0, 0)) + h
    return {mode: {pct: {name: None if h is None else {"object": h.object_hit_ratio, "byte": h.byte_hit_ratio,
                                                       "requests": h.requests}
                         for name, h in cell.items()} for pct, cell in by_pct.items()}
            for mode, by_pct in sums.items()}


def families(quick: bool, seed: int) -> list[Callable[[], Family]]:
    return [
        lambda: generator_family(0.7, quick),
        lambda: generator_family(0.9, quick),
        lambda: generator_family(1.1, quick),
        lambda: irm_family(seed),
        lambda: shot_noise_family(seed),
        lambda: spikes_family(seed),
        lambda: generator_family(0.9, quick, titles=200, users=3000, events=8000),  # 1 % is two titles
        lambda: generator_family(0.9, quick, edges=1, users=150, events=400),  # one tiny edge
        lambda: generator_family(0.9, quick, series_share=0.0),  # movies only: no next episodes
        lambda: generator_family(0.9, quick, releases_per_day=2, titles=5000),  # high churn
        # the project's other model: popularity made of bursts (edgecache.simulate.snm)
        lambda: generator_family(0.9, quick, workload="snm"),
        lambda: generator_family(0.9, quick, workload="snm", snm_shape="uniform", snm_lifetime_days=3.0),
    ]


def best_classic(cell: dict, metric: str) -> float | None:
    vals = [cell[c][metric] for c in CLASSICS if cell.get(c) is not None]
    return max(vals) if vals else None


def table(results: dict, metric_of: Callable[[str], str]) -> list[str]:
    """Rows: family, mode, prediction; cells: new minus the best classic (old minus it)."""
    pcts = [str(p) for p in SIZES_PCT]
    lines = ["| family | mode | prediction | " + " | ".join(f"{p} %" for p in pcts) + " | worst new (old) |",
             "| --- | --- | --- | " + " | ".join("---:" for _ in pcts) + " | ---: |"]
    for fam, by_mode in results.items():
        for mode, by_pct in by_mode.items():
            metric = metric_of(mode)
            best = {p: best_classic(by_pct[p], metric) for p in pcts}
            lines.append(f"| {fam} | {mode} | best classic | "
                         + " | ".join("n/a" if best[p] is None else f"{best[p]:.3f}" for p in pcts) + " | |")
            for kind in GOOD + USELESS:
                diffs = {v: [by_pct[p][f"{v}|{kind}"][metric] - best[p] for p in pcts] for v in VARIANTS}
                cells = [f"{n:+.3f} ({o:+.3f})" for n, o in zip(diffs["new"], diffs["old"])]
                lines.append(f"| {fam} | {mode} | {kind} | " + " | ".join(cells)
                             + f" | {min(diffs['new']):+.3f} ({min(diffs['old']):+.3f}) |")
    return lines


def summary(results: dict, metric_of: Callable[[str], str]) -> dict:
    """Per variant: cells (family, mode, size) with useless predictions more than 0.005 below
    the best classic, the worst of them, and the mean gain over it with good predictions."""
    out = {}
    for v in VARIANTS:
        useless, good = [], []
        for by_mode in results.values():
            for mode, by_pct in by_mode.items():
                for cell in by_pct.values():
                    best = best_classic(cell, metric_of(mode))
                    useless += [cell[f"{v}|{k}"][metric_of(mode)] - best for k in USELESS]
                    good += [cell[f"{v}|{k}"][metric_of(mode)] - best for k in GOOD]
        out[v] = {"useless_cells_below_0.005": int(sum(d < -0.005 for d in useless)), "useless_cells": len(useless),
                  "useless_worst": round(min(useless), 4), "good_mean_gain": round(float(np.mean(good)), 4),
                  "good_worst": round(min(good), 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller generator days")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", type=int, nargs="*", help="family indices to run (default: all)")
    parser.add_argument("--bytes-metric", action="store_true", help="judge the byte mode by byte hit ratio")
    args = parser.parse_args(argv)

    def metric_of(mode: str) -> str:
        return "byte" if mode == "bytes" and args.bytes_metric else "object"

    results = {}
    started = time.perf_counter()
    for i, make in enumerate(families(args.quick, args.seed)):
        if args.only and i not in args.only:
            continue
        fam = make()
        t = time.perf_counter()
        results[fam.name] = run_family(fam, GOOD + USELESS, args.workers, args.seed)
        n = sum(len(tr) for tr in fam.traces.values())
        print(f"{fam.name}: {len(fam.traces)} edge(s), {n} requests, {fam.catalog.titles} titles "
              f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    print("\n".join(table(results, metric_of)))
    totals = summary(results, metric_of)
    print()
    for v, t in totals.items():
        print(f"{v}: useless predictions {t['useless_cells_below_0.005']} of {t['useless_cells']} cells more than "
              f"0.005 below the best classic (worst {t['useless_worst']:+.3f}); good predictions "
              f"{t['good_mean_gain']:+.3f} over it on average (worst {t['good_worst']:+.3f})")
    suffix = f"-seed{args.seed}" if args.seed != 7 else ""
    out = HERE / "results" / f"admission{suffix}{'-bytes' if args.bytes_metric else ''}.json"
    write_json_atomic(out, {"seed": args.seed, "quick": args.quick, "metric_bytes_mode": metric_of("bytes"),
                            "summary": totals, "results": results, "seconds": round(time.perf_counter() - started, 1)})
    print(f"\nresults: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
