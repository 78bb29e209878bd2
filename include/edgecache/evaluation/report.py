"""Evaluation: replay day D+1's requests against day D's predictions and classic policies.

Each edge has its own cache. For every cache size (a share of the catalog, counted in
titles or in bytes) each policy of ``edgecache.evaluation.policies`` replays the edge's requests in
timestamp order; the overall figures add up the hits of all edges. Caches counted in
titles report object hit ratios; caches counted in bytes report byte hit ratios and object
hit ratios. (libCacheSim weighs bytes by the sizes it caches with, which are all 1 in a
cache counted in titles, so byte figures there would only repeat the object ones.) The
per-user ranked predictions are scored on each viewer's first request of D+1.

Pure functions on pandas frames and numpy arrays; ``edgecache.evaluation.evaluate`` reads the
inputs with Spark and writes what ``write_outputs`` makes of them.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgecache.evaluation.policies import (
    POLICIES,
    AdmissionReplay,
    Hits,
    Job,
    Ranking,
    Sequels,
    Trace,
    hit_ratios_many,
    run_admission,
    s3fifo_small_ratio,
    static_hits,
)
from edgecache.serving.admission import next_episode_rows

SIZES_PCT: tuple[int, ...] = (1, 2, 5, 10, 20)
MODES: tuple[str, ...] = ("titles", "bytes")
HEADLINE = {"titles": "object_hit_ratio", "bytes": "byte_hit_ratio"}  # what each mode is judged by
TOP_K = (1, 10)
MAX_SIZE = np.iinfo(np.uint32).max  # libCacheSim's oracleGeneral stores sizes as uint32
CSV_HEADER = "timestamp,obj_id,size"
_NUMBER = re.compile(r"^\D*(\d+)$")


def object_ids(content_ids: Sequence[str]) -> np.ndarray:
    """The object id libCacheSim sees for each title: the number an id ends in ("C00042" ->
    42) when every id ends in a distinct positive number, else 1 + the id's rank in sorted
    order (an operator's ids need not carry numbers)."""
    try:
        ids = content_numbers(content_ids)
        if len(np.unique(ids)) == len(ids):
            return ids
    except ValueError:
        pass
    codes, _ = pd.factorize(pd.Series(list(content_ids), dtype=object), sort=True)
    return (codes + 1).astype(np.uint64)


def content_numbers(content_ids: Iterable[str]) -> np.ndarray:
    """The integer in each content id ("C00042" -> 42): the object id libCacheSim sees."""
    out = []
    for cid in content_ids:
        m = _NUMBER.match(cid)
        if m is None or int(m.group(1)) < 1:
            raise ValueError(f"content id {cid!r} does not end in a positive number")
        out.append(int(m.group(1)))
    return np.array(out, dtype=np.uint64)


@dataclass(frozen=True)
class Catalog:
    """Titles by object id, sizes in ``unit`` bytes (1 unless a title outgrows uint32), and
    each title's next episode (0: a movie, a series' last episode, or no series columns)."""

    obj_id: np.ndarray  # sorted, uint64
    size: np.ndarray  # int64, in unit bytes, >= 1
    unit: int
    next_id: np.ndarray | None = None  # uint64, aligned with obj_id
    content_ids: pd.Index | None = None  # content id of each object, aligned with obj_id

    @classmethod
    def from_frame(cls, catalog: pd.DataFrame) -> Catalog:
        """From content_id and size_bytes; series_id and episode (position in the whole
        series), where present, link each episode to the next."""
        if catalog["content_id"].duplicated().any():
            raise ValueError("a content id appears twice in the catalog")
        ids = object_ids(catalog["content_id"].tolist())
        size_bytes = catalog["size_bytes"].to_numpy(dtype=np.int64)
        if (size_bytes < 1).any():
            raise ValueError("catalog sizes must be positive")
        unit = 1
        while -(-int(size_bytes.max()) // unit) > MAX_SIZE:
            unit *= 1024
        order = np.argsort(ids)
        nxt = next_episodes(catalog, ids)
        return cls(
            ids[order],
            -(-size_bytes[order] // unit),
            unit,
            nxt[order],
            pd.Index(catalog["content_id"].to_numpy()[order]),
        )

    def numbers(self, content_ids: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
        """The object id of each content id; 0 for a title outside the catalog."""
        if self.content_ids is None:
            raise ValueError("this catalog was built without its content ids")
        pos = self.content_ids.get_indexer(pd.Index(np.asarray(content_ids, dtype=object)))
        return np.where(pos >= 0, self.obj_id[np.maximum(pos, 0)], 0).astype(np.uint64)

    @property
    def sequels(self) -> Sequels:
        nxt = self.next_id if self.next_id is not None else np.zeros(len(self.obj_id), dtype=np.uint64)
        return Sequels(self.obj_id, self.size, nxt)

    @property
    def titles(self) -> int:
        return len(self.obj_id)

    @property
    def total_size(self) -> int:
        return int(self.size.sum())

    def contains(self, ids: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.obj_id, ids), len(self.obj_id) - 1)
        return self.obj_id[pos] == ids

    def sizes(self, ids: np.ndarray) -> np.ndarray:
        return self.size[np.searchsorted(self.obj_id, ids)]


def next_episodes(catalog: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    """Per catalog row, the object id of the same series' next episode, or 0."""
    out = np.zeros(len(catalog), dtype=np.uint64)
    row, row_next = next_episode_rows(catalog)
    out[row] = ids[row_next]
    return out


def capacities(catalog: Catalog, sizes_pct: Sequence[int]) -> dict[str, dict[int, int]]:
    """Cache capacity per mode and size: a share of the catalog's titles or of its bytes."""
    return {
        "titles": {p: max(1, catalog.titles * p // 100) for p in sizes_pct},
        "bytes": {p: max(1, catalog.total_size * p // 100) for p in sizes_pct},
    }


def _sorted_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes that sort like the values (factorize with sorted uniques), and the uniques."""
    codes, uniques = pd.factorize(values, sort=True)
    return codes, np.asarray(uniques)


@dataclass(frozen=True)
class Requests:
    """A day's accepted requests with each id column factorized once: codes sort like the ids."""

    edge: np.ndarray
    edges: np.ndarray
    user: np.ndarray
    users: np.ndarray
    content: np.ndarray
    contents: np.ndarray
    ts: np.ndarray  # seconds

    @classmethod
    def from_frame(cls, events: pd.DataFrame) -> Requests:
        """From edge_id, user_id, content_id and ts (seconds) columns."""
        edge, edges = _sorted_codes(events["edge_id"])
        user, users = _sorted_codes(events["user_id"])
        content, contents = _sorted_codes(events["content_id"])
        return cls(edge, edges, user, users, content, contents, events["ts"].to_numpy(dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ts)


def edge_traces(requests: Requests, catalog: Catalog) -> tuple[dict[str, Trace], int]:
    """Per edge, its requests in timestamp order as a trace in bytes; and how many requests
    named a title outside the catalog (left out: they have no size).

    Ties in time are broken by viewer and title so a re-run replays the same order.
    """
    r = requests
    if len(r) == 0:
        return {}, 0
    order = np.lexsort((r.content, r.user, r.ts, r.edge))
    numbers = catalog.numbers(r.contents)
    order = order[catalog.contains(numbers)[r.content[order]]]
    ids = numbers[r.content[order]]
    sizes = catalog.sizes(ids)
    ts, edge = r.ts[order], r.edge[order]
    bounds = np.searchsorted(edge, np.arange(len(r.edges) + 1))
    traces = {
        str(r.edges[e]): Trace(ids[lo:hi], sizes[lo:hi], ts[lo:hi])
        for e, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))
        if hi > lo
    }
    return traces, len(r) - len(order)


def edge_rankings(edge_demand: pd.DataFrame, catalog: Catalog) -> dict[str, Ranking]:
    """Per edge, the predicted titles best first (rank 1 first) with their scores and the
    catalog's next-episode links; titles outside the catalog dropped."""
    out, sequels = {}, catalog.sequels
    for edge, g in edge_demand.sort_values(["edge_id", "rank", "content_id"]).groupby("edge_id", sort=True):
        ids = catalog.numbers(g["content_id"])
        known = catalog.contains(ids)
        ids = ids[known]
        score = g["score"].to_numpy(dtype=np.float64)[known]
        out[str(edge)] = Ranking(ids, catalog.sizes(ids), score, sequels)
    return out


def user_metrics(requests: Requests, predictions: pd.DataFrame, ks: Sequence[int] = TOP_K) -> dict[str, Any]:
    """hit@k and MRR of each viewer's first request of the day against their ranked list.

    Viewers without a prediction count as misses. ``predictions`` has user_id and ranked.
    """
    r = requests
    if len(r) == 0:
        return {"evaluated": 0, "with_prediction": 0, **{f"hit@{k}": 0.0 for k in ks}, "mrr": 0.0}
    order = np.lexsort((r.content, r.ts, r.user))
    firsts = order[np.r_[True, r.user[order][1:] != r.user[order][:-1]]]
    first = dict(zip(r.users[r.user[firsts]], r.contents[r.content[firsts]]))
    # one step per viewer, not per request
    pos, with_prediction = [], 0
    for user_id, ranked in zip(predictions["user_id"], predictions["ranked"]):
        wanted = first.get(user_id)
        if wanted is None:
            continue
        with_prediction += 1
        for i, content_id in enumerate(ranked, 1):
            if content_id == wanted:
                pos.append(i)
                break
    n, hit = len(first), np.array(pos, dtype=float)
    out: dict[str, Any] = {"evaluated": n, "with_prediction": with_prediction}
    for k in ks:
        out[f"hit@{k}"] = float(np.sum(hit <= k) / n)
    out["mrr"] = float(np.sum(1.0 / hit) / n)
    return out


def user_metrics_by_edge(events: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """``user_metrics`` for each edge's viewers apart: their requests at that edge against
    their lists, wherever the lists were made (a viewer who moved to an edge that opened
    today was listed at their old one)."""
    return {
        str(e): user_metrics(Requests.from_frame(g), predictions[predictions["user_id"].isin(g["user_id"].unique())])
        for e, g in events.groupby("edge_id", sort=True)
    }


def popularity_predictions(popularity: pd.DataFrame, users: pd.DataFrame, k: int = max(TOP_K)) -> pd.DataFrame:
    """The edge-popularity baseline: each viewer's ranked list is their home edge's ``k``
    most requested titles of the feature window (ties: lower rank, then content id).

    ``popularity`` has edge_id, content_id, requests and rank; ``users`` has user_id and
    edge_id. Returns user_id and ranked, like the model's predictions.
    """
    top = (
        popularity.sort_values(["edge_id", "requests", "rank", "content_id"], ascending=[True, False, True, True])
        .groupby("edge_id", sort=False)
        .head(k)
    )
    lists = top.groupby("edge_id", sort=False)["content_id"].agg(list)
    ranked = users["edge_id"].map(lists)
    return pd.DataFrame(
        {"user_id": users["user_id"].to_numpy(), "ranked": [r if isinstance(r, list) else [] for r in ranked]}
    )


def hit_ratio_vs(model: dict[str, Any], baseline: dict[str, Any], k: int = max(TOP_K)) -> float | None:
    """Model hit@k over the baseline's (None when the baseline never hits)."""
    b = baseline.get(f"hit@{k}", 0.0)
    return model[f"hit@{k}"] / b if b else None


def _entry(by_edge: dict[str, Hits], mode: str) -> dict[str, Any]:
    def figures(h: Hits) -> dict[str, Any]:
        f: dict[str, Any] = {"requests": h.requests, "hits": h.hits, "object_hit_ratio": h.object_hit_ratio}
        if mode == "bytes":
            f.update(bytes=h.bytes, bytes_hit=h.bytes_hit, byte_hit_ratio=h.byte_hit_ratio)
        return f

    total = sum(by_edge.values(), Hits(0, 0, 0, 0))
    return {**figures(total), "per_edge": {e: figures(h) for e, h in sorted(by_edge.items())}}


def _small_queue(largest: int, capacity: int) -> int | None:
    ratio = s3fifo_small_ratio(largest, capacity)
    return None if ratio is None else int(capacity * ratio)


def replay(
    traces: dict[str, Trace],
    rankings: dict[str, Ranking],
    catalog: Catalog,
    sizes_pct: Sequence[int] = SIZES_PCT,
    workers: int = 1,
    policies: Sequence[str] = tuple(POLICIES),
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Every policy at every size and mode, per edge and overall.

    Returns ``{"capacities", "s3fifo_small_queue", "results"}``: results[mode][policy][pct]
    is None where the policy does not work at that size (S3-FIFO in a cache of a few titles).
    """
    caps = capacities(catalog, sizes_pct)
    largest = int(catalog.size.max())
    empty = Ranking(
        np.array([], dtype=np.uint64), np.array([], dtype=np.int64), np.array([], dtype=np.float64), catalog.sequels
    )
    with tempfile.TemporaryDirectory(prefix="edgecache-replay-", dir=workdir) as tmp:
        written = {e: t.with_file(Path(tmp) / f"{i}.oracleGeneral") for i, (e, t) in enumerate(sorted(traces.items()))}
        by_mode = {"titles": {e: t.in_titles() for e, t in written.items()}, "bytes": written}
        jobs, keys = [], []
        for mode in MODES:
            for pct, cap in caps[mode].items():
                for name in policies:
                    for edge, trace in by_mode[mode].items():
                        jobs.append(Job(name, trace, cap, rankings.get(edge, empty), largest))
                        keys.append((mode, name, pct, edge))
        hits = hit_ratios_many(jobs, workers)
    grouped: dict[tuple[str, str, int], dict[str, Hits | None]] = {}
    for (mode, name, pct, edge), h in zip(keys, hits):
        grouped.setdefault((mode, name, pct), {})[edge] = h
    results: dict[str, Any] = {m: {n: {} for n in policies} for m in MODES}
    for (mode, name, pct), by_edge in grouped.items():
        ok = all(h is not None for h in by_edge.values())
        results[mode][name][str(pct)] = _entry(by_edge, mode) if ok else None  # type: ignore[arg-type]
    for mode in MODES:
        metric = HEADLINE[mode]
        for name in policies:
            for pct_key in map(str, sizes_pct):
                e, o = results[mode][name][pct_key], results[mode].get("oracle", {}).get(pct_key)
                if e is not None:
                    e["share_of_oracle"] = e[metric] / o[metric] if o and o[metric] else None
    return {
        "capacities": {m: {str(p): c for p, c in caps[m].items()} for m in MODES},
        # S3-FIFO's small queue, in the mode's unit (None: S3-FIFO cannot work at that size)
        "s3fifo_small_queue": {
            m: {str(p): _small_queue(1 if m == "titles" else largest, c) for p, c in caps[m].items()} for m in MODES
        },
        "results": results,
    }


POPULARITY_PREFETCH = "popularity"
POPULARITY_DOC = (
    "recency-weighted edge popularity of the feature window (each day's requests weighted "
    "e^(-age / 2 days)), held all day: the set a nightly prefetch must beat"
)


def popularity_rankings(popularity: pd.DataFrame, catalog: Catalog) -> dict[str, Ranking]:
    """Per edge, titles by recency-weighted requests (``requests_decayed``), most first."""
    frame = popularity.sort_values(["edge_id", "requests_decayed", "content_id"], ascending=[True, False, True])
    frame = frame.assign(rank=frame.groupby("edge_id").cumcount() + 1, score=frame["requests_decayed"])
    return edge_rankings(frame[["edge_id", "content_id", "score", "rank"]], catalog)


def static_baseline(
    traces: dict[str, Trace], rankings: dict[str, Ranking], catalog: Catalog, sizes_pct: Sequence[int]
) -> dict[str, dict[str, Any]]:
    """A static set per edge (the top of ``rankings`` that fits), held all day: results[mode][pct]."""
    caps = capacities(catalog, sizes_pct)
    empty = np.array([], dtype=np.uint64)
    out: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        out[mode] = {}
        for pct, cap in caps[mode].items():
            by_edge = {}
            for edge, trace in traces.items():
                t = trace.in_titles() if mode == "titles" else trace
                r = rankings.get(edge)
                by_edge[edge] = static_hits(t, r.top(cap, t.unit_size).obj_id if r is not None else empty)
            out[mode][str(pct)] = _entry(by_edge, mode)
    return out


def deployed(
    traces: dict[str, Trace],
    rankings: dict[str, Ranking],
    prefetch: pd.DataFrame,
    catalog: Catalog,
    cache_bytes: int,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """The caches as deployed: each edge starts with its prefetch set (``prefetch``: edge_id,
    content_id) in a cache of ``cache_bytes``, held all day (``predictive``) or run by the
    delivery path's admission on miss (``predictive+admission``, priors from ``rankings``).

    This is what the edge services do during the day, so a replay through them should
    give the same hit ratios."""
    capacity = -(-int(cache_bytes) // catalog.unit)
    empty = np.array([], dtype=np.uint64)
    out: dict[str, dict[str, Hits]] = {"predictive": {}, "predictive+admission": {}}
    with tempfile.TemporaryDirectory(prefix="edgecache-deployed-", dir=workdir) as tmp:
        for i, (edge, trace) in enumerate(sorted(traces.items())):
            ids = prefetch.loc[prefetch["edge_id"] == edge, "content_id"]
            warm_ids = catalog.numbers(ids) if len(ids) else empty
            warm_ids = warm_ids[catalog.contains(warm_ids)] if len(warm_ids) else warm_ids
            ranking = rankings.get(edge)
            out["predictive"][edge] = static_hits(trace, warm_ids)
            written = trace.with_file(Path(tmp) / f"{i}.oracleGeneral")
            out["predictive+admission"][edge] = run_admission(
                AdmissionReplay(
                    str(written.file),
                    False,
                    capacity,
                    len(trace),
                    trace.total_size,
                    warm_ids,
                    ranking.obj_id if ranking is not None else empty,
                    ranking.scores if ranking is not None else np.array([], dtype=np.float64),
                    catalog.sequels,
                )
            )
    return {
        "cache_bytes": int(cache_bytes),
        "capacity_units": capacity,
        "policies": {name: _entry(by_edge, "bytes") for name, by_edge in out.items()},
    }


def evaluate(
    events: pd.DataFrame,
    catalog_frame: pd.DataFrame,
    edge_demand: pd.DataFrame,
    predictions: pd.DataFrame,
    sizes_pct: Sequence[int] = SIZES_PCT,
    workers: int = 1,
    workdir: Path | None = None,
    popularity: pd.DataFrame | None = None,
    prefetch: pd.DataFrame | None = None,
    cache_bytes: int | None = None,
) -> tuple[dict[str, Any], dict[str, Trace]]:
    """The whole evaluation from frames: the report and the per-edge traces it replayed.

    With ``popularity`` (day D's feature window: edge_id, content_id, requests, rank) and an
    edge_id column in ``predictions``, the per-user figures are also given for the
    edge-popularity baseline; with its ``requests_decayed`` too, the results have the
    recency-weighted popularity prefetch (``popularity``). With ``prefetch`` and ``cache_bytes`` (the night's prefetch
    sets and their cache size) the report has the ``deployed`` caches too.
    """
    clock = time.perf_counter()
    seconds = {}
    catalog = Catalog.from_frame(catalog_frame)
    requests = Requests.from_frame(events)
    traces, unknown = edge_traces(requests, catalog)
    rankings = edge_rankings(edge_demand, catalog)
    seconds["traces"], clock = time.perf_counter() - clock, time.perf_counter()
    replayed = replay(traces, rankings, catalog, sizes_pct, workers, workdir=workdir)
    if prefetch is not None and cache_bytes:
        replayed["deployed"] = deployed(traces, rankings, prefetch, catalog, cache_bytes, workdir)
    if popularity is not None and "requests_decayed" in popularity:
        base = static_baseline(traces, popularity_rankings(popularity, catalog), catalog, sizes_pct)
        for mode in MODES:
            oracle = replayed["results"][mode].get("oracle", {})
            for pct, e in base[mode].items():
                o = oracle.get(pct)
                e["share_of_oracle"] = e[HEADLINE[mode]] / o[HEADLINE[mode]] if o and o[HEADLINE[mode]] else None
            replayed["results"][mode][POPULARITY_PREFETCH] = base[mode]
    seconds["replay"], clock = time.perf_counter() - clock, time.perf_counter()
    users = user_metrics(requests, predictions)
    if "edge_id" in predictions:
        users["per_edge"] = user_metrics_by_edge(events, predictions)
    baseline = None
    if popularity is not None and "edge_id" in predictions:
        listed = popularity_predictions(popularity, predictions)
        baseline = {**user_metrics(requests, listed), "per_edge": user_metrics_by_edge(events, listed)}
    seconds["users"] = time.perf_counter() - clock
    report = {
        "catalog": {
            "titles": catalog.titles,
            "bytes": int(catalog_frame["size_bytes"].sum()),
            "size_unit_bytes": catalog.unit,
        },
        "requests_replayed": int(sum(len(t) for t in traces.values())),
        "requests_unknown_title": unknown,
        "edges": {
            e: {
                "requests": len(t),
                "titles_requested": int(len(np.unique(t.obj_id))),
                "predicted_titles": int(len(rankings[e].obj_id)) if e in rankings else 0,
            }
            for e, t in sorted(traces.items())
        },
        "edges_without_prediction": sorted(set(traces) - set(rankings)),
        "sizes_pct": list(sizes_pct),
        "policies": {
            **{n: POLICIES[n].doc for n in POLICIES},
            **({POPULARITY_PREFETCH: POPULARITY_DOC} if POPULARITY_PREFETCH in replayed["results"]["titles"] else {}),
        },
        **replayed,
        "users": users,
        **(
            {"users_baseline": baseline, f"users_hit@{max(TOP_K)}_vs_baseline": hit_ratio_vs(users, baseline)}
            if baseline is not None
            else {}
        ),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    return report, traces


# --- outputs -------------------------------------------------------------------------


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _table(report: dict[str, Any], mode: str, metric: str) -> list[str]:
    pcts = [str(p) for p in report["sizes_pct"]]
    caps = report["capacities"][mode]

    def cap(p: str) -> str:
        c = caps[p]
        if mode == "titles":
            return f"{c} title" + ("s" if c != 1 else "")
        return f"{c * report['catalog']['size_unit_bytes'] / 1e9:.1f} GB"

    lines = [
        "| policy | " + " | ".join(f"{p} % ({cap(p)})" for p in pcts) + " |",
        "| --- | " + " | ".join("---:" for _ in pcts) + " |",
    ]
    for name, by_pct in report["results"][mode].items():
        cells = [_fmt(None if by_pct[p] is None else by_pct[p][metric]) for p in pcts]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: hit-ratio tables (rows policies, columns cache sizes) and users."""
    r = report
    n_edges = len(r["edges"])
    head = [
        f"# Cache evaluation: predictions of {r.get('date', 'D')} replayed on {r.get('replayed_date', 'D+1')}",
        "",
        f"{r['requests_replayed']} requests replayed at {n_edges} edge(s), each edge its own cache; "
        f"catalog of {r['catalog']['titles']} titles, {r['catalog']['bytes'] / 1e9:.1f} GB.",
    ]
    young = {e: f["age_days"] for e, f in r["edges"].items() if f.get("age_days", 99) <= 7}
    if young:
        head.append(
            "New edges (age in days on the night of the predictions): "
            + ", ".join(f"{e} {a}" for e, a in sorted(young.items()))
            + "."
        )
    if "validation" in r:
        v = r["validation"]
        head.append(
            f"Log lines: {v['lines_in']} in, {v['accepted']} accepted, {v['quarantined']} rejected "
            f"{json.dumps(v['quarantined_by_reason'], sort_keys=True)}; "
            f"{r['requests_unknown_title']} request(s) for titles outside the catalog left out."
        )
    unit = r["catalog"]["size_unit_bytes"]
    if unit != 1:
        head.append(
            f"Sizes in the traces and byte capacities are in units of {unit} bytes "
            "(a title outgrows the 32-bit size field of libCacheSim's binary traces)."
        )
    out = [
        *head,
        "",
        "## Object hit ratio, caches sized in titles",
        "",
        *_table(r, "titles", "object_hit_ratio"),
        "",
        "## Byte hit ratio, caches sized in bytes",
        "",
        *_table(r, "bytes", "byte_hit_ratio"),
        "",
        "## Share of the static oracle's hit ratio (caches in titles)",
        "",
        *_table(r, "titles", "share_of_oracle"),
        "",
        "n/a: the policy does not work at that size (libCacheSim's S3-FIFO admits only objects "
        "smaller than its small queue, at most half the cache).",
        "",
    ]
    u = r["users"]
    ks = [k for k in u if k.startswith("hit@")]
    rows = [("model", u)] + ([("edge popularity", r["users_baseline"])] if "users_baseline" in r else [])
    if "deployed" in r:
        dep = r["deployed"]
        out += [
            f"## The caches as deployed ({dep['cache_bytes'] / 1e9:g} GB, starting with the night's prefetch set)",
            "",
            "What the edge services do during the day; `edgecache replay` through them should match.",
            "",
            "| policy | object hit ratio | byte hit ratio |",
            "| --- | ---: | ---: |",
        ]
        out += [
            f"| {name} | {_fmt(e['object_hit_ratio'])} | {_fmt(e['byte_hit_ratio'])} |"
            for name, e in dep["policies"].items()
        ]
        out.append("")
    out += [
        "## Per-user predictions (first request of the day)",
        "",
        "| ranked list | viewers evaluated | with a list | " + " | ".join(ks) + " | MRR |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in ks) + " | ---: |",
    ]
    out += [
        f"| {name} | {m['evaluated']} | {m['with_prediction']} | "
        + " | ".join(_fmt(m[k]) for k in ks)
        + f" | {_fmt(m['mrr'])} |"
        for name, m in rows
    ]
    out.append("")
    k = f"hit@{max(TOP_K)}"
    if "users_baseline" in r:
        out += [
            f"Model {k} over the edge-popularity baseline's (each viewer gets their edge's "
            f"{max(TOP_K)} most requested titles of the feature window): "
            f"{_fmt(r.get(f'users_{k}_vs_baseline'))}.",
            "",
        ]
        base = r["users_baseline"].get("per_edge", {})
        losing = [
            f"{e} ({_fmt(m[k])} against {_fmt(base[e][k])})"
            for e, m in sorted(u.get("per_edge", {}).items())
            if e in base and m[k] < base[e][k]
        ]
        if losing:
            out += [f"Edges where the model's {k} is below the baseline's: " + ", ".join(losing) + ".", ""]
    return "\n".join(out)


def plot(report: dict[str, Any], path: Path) -> None:
    """hit_ratio.png: hit ratio against cache size, one line per policy, one panel per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pcts = report["sizes_pct"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, mode in zip(axes, MODES):
        metric = HEADLINE[mode]
        for name, by_pct in report["results"][mode].items():
            ys = [np.nan if by_pct[str(p)] is None else by_pct[str(p)][metric] for p in pcts]
            ax.plot(pcts, ys, marker="o", label=name, linestyle="--" if name in ("Belady", "oracle") else "-")
        ax.set_xscale("log")
        ax.set_xticks(pcts, [f"{p} %" for p in pcts])
        ax.minorticks_off()
        ax.set_xlabel(f"cache size (share of the catalog's {mode})")
        ax.set_title(metric.replace("_", " ") + f", caches in {mode}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("hit ratio")
    axes[0].set_ylim(0, 1)
    axes[1].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Replay of {report.get('replayed_date', 'D+1')} against the predictions of {report.get('date', 'D')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_trace_csv(trace: Trace, path: Path) -> None:
    """``timestamp,obj_id,size`` (size in the report's size unit): libCacheSim's CSV reader
    replays it with time, id and size fields 1, 2 and 3 and a header."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table(
        {
            "timestamp": trace.timestamp.astype(np.int64),
            "obj_id": trace.obj_id.astype(np.uint64),
            "size": trace.size.astype(np.int64),
        }
    )
    with open(path, "wb") as fh:
        fh.write((CSV_HEADER + "\n").encode())
        pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False))


def write_outputs(report: dict[str, Any], traces: dict[str, Trace], out: Path) -> None:
    """report.json, report.md, hit_ratio.png and traces/edge=E.csv under ``out``, replacing
    an earlier evaluation of the same day as a whole."""
    from edgecache.layout import write_json_atomic

    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "traces").mkdir(parents=True)
    for edge, trace in sorted(traces.items()):
        write_trace_csv(trace, tmp / "traces" / f"edge={edge}.csv")
    plot(report, tmp / "hit_ratio.png")
    (tmp / "report.md").write_text(to_markdown(report))
    write_json_atomic(tmp / "report.json", report)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
