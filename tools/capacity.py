"""Capacity model: what the measured unit costs add up to at a target scale.

    python tools/capacity.py [--users 10000000] [--titles 50000] [--edges 500] [--events 1e9]
                             [--peak-factor 3 | --peak-rps N] [--cache-gb 90] [--top-k 10]
                             [--window-days 7] [--write-doc]

Reads three measurement files under bench/results/ and nothing else:

- ``engine.json`` (``python bench/engine.py``): wall seconds of the nightly features and
  predict jobs on ``local[N]`` at several event counts;
- ``delivery.json`` (``python bench/delivery.py``): delivery decisions per second over HTTP,
  the Redis server's time per decision, the warm's viewer keys per second;
- ``redis_memory.json`` (``python bench/redis_memory.py``): used_memory per viewer, bytes
  per entry of each edge key, the catalog, the fixed part, the edge state's warm time;
  and, if it is there, ``redis_memory_jemalloc.json`` (the same run on another build of
  redis-server), which the page sets beside the figures without using it.

It prints a markdown table of every figure with the formula and the measurement it comes
from, writes bench/results/capacity.json, and with ``--write-doc`` replaces the generated
part of docs/capacity.md (between ``<!-- capacity:begin -->`` and ``<!-- capacity:end -->``),
which also keeps the inputs it was computed from, so the page can be checked against the
model without the result files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from edgecache.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "capacity.md"
BEGIN, END = "<!-- capacity:begin -->", "<!-- capacity:end -->"
INPUTS_RE = re.compile(r"<!-- capacity:inputs\n(.*?)\n-->", re.S)
DAY_SECONDS = 86400
GB = 1e9  # decimal, as cache_gb

COMMANDS = {
    "engine.json": "python bench/engine.py --driver-memory 6g --events 1000000 3000000 10000000 30000000",
    "delivery.json": "python bench/delivery.py",
    "redis_memory.json": "python bench/redis_memory.py",
}
OTHER_BUILD = "redis_memory_jemalloc.json"
OTHER_BUILD_COMMAND = (
    f"python bench/redis_memory.py --redis-server /usr/bin/redis-server --out bench/results/{OTHER_BUILD}"
)


@dataclass(frozen=True)
class Targets:
    """The scale to plan for, and the planning choices (not measurements)."""

    users: int = 10_000_000
    titles: int = 50_000
    edges: int = 500
    events_per_day: float = 1e9
    peak_factor: float = 3.0  # peak request rate / the day's mean rate
    peak_rps: float | None = None  # overrides peak_factor
    cache_gb: float = Settings().cache_gb
    top_k: int = Settings().top_k
    window_days: int = Settings().window_days
    prior_share: float = 1.0  # share of the catalog in each edge's demand (edge:{E}:prior)
    trans_share: float = 1.0  # share of the catalog with followers at each edge (edge:{E}:trans)
    fit_points: int = 2  # the engine runs with the most events that the linear fit uses
    spark_hours: float = 1.0  # the nightly jobs should finish within this
    utilisation: float = 0.6  # planned share of a core's measured capacity (the rest is headroom)
    node_cores: int = 8  # cores per delivery node
    gb_per_primary: float = 25.0  # used_memory planned per Redis primary
    warm_writers: int | None = None  # parallel warm streams; None: one per Redis primary

    @property
    def peak(self) -> float:
        return self.peak_rps if self.peak_rps is not None else self.peak_factor * self.events_per_day / DAY_SECONDS


# ---------------------------------------------------------------- inputs


def _local_cores(master: str) -> int:
    m = re.fullmatch(r"local\[(\d+)\]", master)
    if not m:
        raise ValueError(f"engine.json was measured on {master!r}: need local[N] to count the cores")
    return int(m.group(1))


MEASUREMENTS = ("engine.json", "delivery.json", "redis_memory.json")


def load_inputs(results: Path = RESULTS) -> dict:
    """The unit costs the model uses, taken from the three measurement files."""
    engine = json.loads((results / "engine.json").read_text())
    delivery = json.loads((results / "delivery.json").read_text())
    memory = json.loads((results / "redis_memory.json").read_text())
    runs = sorted(engine["runs"], key=lambda r: r["events_per_day"])
    e, v = memory["edges"], memory["viewers"]
    thresholds = memory["server"]["encoding_thresholds"]
    other = None
    if (results / OTHER_BUILD).exists():
        o = json.loads((results / OTHER_BUILD).read_text())
        other = {
            "version": o["server"]["redis_version"],
            "allocator": o["server"]["mem_allocator"],
            "bytes_per_viewer": o["viewers"]["used_memory_bytes_per_viewer"],
            "bytes_per_edge_measured": o["edges"]["used_memory_bytes_per_edge"],
            "titles": o["edges"]["titles"],
        }

    def encoded(kind: str) -> list[dict]:
        small, large = e["keys"][kind], e["large_cache"][kind]
        return [
            {
                "entries": small["entries_per_edge"],
                "bytes_per_entry": small["bytes_per_entry"],
                "encoding": small["encoding"],
            },
            {
                "entries": e["large_cache"]["titles"],
                "bytes_per_entry": large["bytes_per_entry"],
                "encoding": large["encoding"],
            },
        ]

    return {
        "engine": {
            "master": engine["master"],
            "cores": _local_cores(engine["master"]),
            "window_days": engine["window_days"],
            "reference_seconds": engine["reference_seconds"],
            "runs": [
                {
                    k: r[k]
                    for k in (
                        "events",
                        "events_per_day",
                        "users",
                        "titles",
                        "features_seconds",
                        "predict_seconds",
                        "total_seconds",
                    )
                }
                for r in runs
            ],
        },
        "delivery": {
            "cpus": delivery["machine"]["cpus"],
            "decisions_per_second": delivery["http"]["wrk_saturated"]["throughput_per_second"],
            "p99_ms": delivery["http"]["wrk_saturated"]["latency_ms_p99_worst"],
            "redis_us_per_decision": delivery["inproc"]["server_microseconds_per_call"]["evalsha"],
            "warm_keys_per_second": delivery["warm"]["keys_per_second"],
            "warm_keys": delivery["warm"]["keys"],
        },
        "redis": {
            "version": memory["server"]["redis_version"],
            "allocator": memory["server"]["mem_allocator"],
            "zset_max_small": thresholds.get("zset-max-listpack-entries", thresholds.get("zset-max-ziplist-entries")),
            "hash_max_small": thresholds.get("hash-max-listpack-entries", thresholds.get("hash-max-ziplist-entries")),
            "top_k": v["top_k"],
            "viewers": v["phases"][-1]["viewers"],
            "id_space": v["id_space"],
            "bytes_per_viewer": v["used_memory_bytes_per_viewer"],
            "reference_bytes_per_key": memory["reference"]["used_memory_bytes_per_key"],
            "titles": e["titles"],
            "edges": e["edges"],
            "prior_bytes_per_entry": e["keys"]["prior"]["bytes_per_entry"],
            "prior_entries": e["keys"]["prior"]["entries_per_edge"],
            "trans_bytes_per_entry": e["keys"]["trans"]["bytes_per_entry"],
            "trans_entries": e["keys"]["trans"]["entries_per_edge"],
            "meta_bytes": e["keys"]["meta"]["bytes_per_edge"],
            "cache": encoded("cache"),
            "sizes": encoded("sizes"),
            "edge_beyond_memory_usage_bytes": e["used_memory_beyond_memory_usage_per_edge"],
            "bytes_per_edge_measured": e["used_memory_bytes_per_edge"],
            "mean_bytes_per_cached_title": e["mean_bytes_per_cached_title"],
            "cache_gb": e["cache_gb"],
            "catalog_bytes_per_title": memory["catalog"]["bytes_per_title"],
            "empty_bytes": memory["empty_server_used_memory"] + memory["last_warm"]["memory_usage_bytes"],
            "edge_warm_seconds_per_edge": e["warm_seconds_per_edge"],
            "edge_followers_seconds_per_edge": e["top_followers_seconds_per_edge"],
            "edge_server_us_per_edge": e["server_microseconds_per_edge"]["max"],
            "viewer_keys_per_second": v["keys_per_second"],
            "loadavg": memory["machine"]["loadavg_at_start"][0],
        },
        "redis_other_build": other,
    }


# ---------------------------------------------------------------- arithmetic


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares ``y = a + b x``: (a, b)."""
    if len(xs) < 2 or len(set(xs)) < 2:
        raise ValueError("a linear fit needs runs at two or more sizes")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def power_exponent(xs: list[float], ys: list[float]) -> float:
    """Exponent k of ``y ~ x**k`` through the first and last point."""
    return math.log(ys[-1] / ys[0]) / math.log(xs[-1] / xs[0])


def pick_encoding(measured: list[dict], entries: float, small_max: int) -> dict:
    """The measurement of a key kind in the encoding Redis uses at ``entries`` entries."""
    same = [m for m in measured if (m["entries"] <= small_max) == (entries <= small_max)]
    pool = same or measured
    return min(pool, key=lambda m: abs(math.log(max(m["entries"], 1) / max(entries, 1))))


Fit = tuple[float, float]  # (a, b) of y = a + b x


class Figures:
    """The model's figures by name, each with its value, unit, formula and sources."""

    def __init__(self) -> None:
        self.table: dict[str, dict] = {}

    def put(self, name: str, value: float, unit: str, formula: str, *sources: str) -> float:
        """Record one figure and return its value."""
        self.table[name] = {"value": value, "unit": unit, "formula": formula, "sources": list(sources)}
        return value


def spark_nightly(fig: Figures, eng: dict, t: Targets) -> tuple[Fit, Fit]:
    """Spark's nightly features + predict: unit costs, core-hours, fixed wall time, executor cores."""
    put = fig.put
    # wall seconds on local[N] ~ a + b * events per day, through the largest runs
    runs = eng["runs"][-t.fit_points :]
    if len(runs) < 2:
        raise ValueError("engine.json needs at least two runs")
    cores, wf = eng["cores"], t.window_days / eng["window_days"]
    x = [r["events_per_day"] for r in runs]
    a_f, b_f = linear_fit(x, [r["features_seconds"] for r in runs])
    a_p, b_p = linear_fit(x, [r["predict_seconds"] for r in runs])
    a_pu, b_pu = linear_fit([r["users"] for r in runs], [r["predict_seconds"] for r in runs])
    fit_src = f"engine.json: runs[events_per_day={', '.join(f'{v:,.0f}' for v in x)}]"
    put(
        "features_core_seconds_per_event",
        cores * b_f,
        "core-s",
        f"{cores} cores x slope of features_seconds over events_per_day",
        fit_src + ".features_seconds",
    )
    put(
        "predict_core_seconds_per_event",
        cores * b_p,
        "core-s",
        f"{cores} cores x slope of predict_seconds over events_per_day",
        fit_src + ".predict_seconds",
    )
    put(
        "predict_core_seconds_per_viewer",
        cores * b_pu,
        "core-s",
        f"{cores} cores x slope of predict_seconds over users",
        fit_src + ".predict_seconds, .users",
    )
    feat = put(
        "spark_features_core_hours",
        cores * b_f * t.events_per_day * wf / 3600,
        "core-h",
        f"{cores} x {b_f:.3g} s/event x {t.events_per_day:,.0f} events x window {t.window_days}/"
        f"{eng['window_days']} / 3600",
        fit_src + ".features_seconds",
        "engine.json: window_days",
    )
    pred_hi = put(
        "spark_predict_core_hours_by_events",
        cores * b_p * t.events_per_day / 3600,
        "core-h",
        f"{cores} x {b_p:.3g} s/event x {t.events_per_day:,.0f} events / 3600",
        fit_src + ".predict_seconds",
    )
    pred_lo = put(
        "spark_predict_core_hours_by_viewers",
        cores * b_pu * t.users / 3600,
        "core-h",
        f"{cores} x {b_pu:.3g} s/viewer x {t.users:,} viewers / 3600",
        fit_src + ".predict_seconds, .users",
    )
    hi = put(
        "spark_core_hours_high",
        feat + pred_hi,
        "core-h",
        "features + predict scaled by events",
        "spark_features_core_hours",
        "spark_predict_core_hours_by_events",
    )
    lo = put(
        "spark_core_hours_low",
        feat + pred_lo,
        "core-h",
        "features + predict scaled by viewers",
        "spark_features_core_hours",
        "spark_predict_core_hours_by_viewers",
    )
    fixed = put(
        "spark_fixed_wall_seconds",
        max(a_f, 0.0) + max(a_p, 0.0),
        "s",
        f"intercepts of the two fits: features {a_f:.1f} s + predict {a_p:.1f} s (a negative one counts 0)",
        fit_src + ".features_seconds, .predict_seconds",
    )
    put(
        "spark_submit_seconds",
        2 * eng["reference_seconds"],
        "s",
        f"2 jobs x bare spark-submit {eng['reference_seconds']} s",
        "engine.json: reference_seconds",
    )
    window = t.spark_hours * 3600 - fixed
    if window <= 0:
        raise ValueError(f"spark_hours={t.spark_hours} leaves no time after the fixed {fixed:.0f} s")
    put(
        "spark_cluster_cores_high",
        math.ceil(hi * 3600 / window),
        "cores",
        f"{hi:.1f} core-h x 3600 / ({t.spark_hours:g} h x 3600 - {fixed:.0f} s fixed)",
        "spark_core_hours_high",
    )
    put(
        "spark_cluster_cores_low",
        math.ceil(lo * 3600 / window),
        "cores",
        f"{lo:.1f} core-h x 3600 / ({t.spark_hours:g} h x 3600 - {fixed:.0f} s fixed)",
        "spark_core_hours_low",
    )
    return (a_f, b_f), (a_p, b_p)


def spark_checks(fig: Figures, eng: dict, t: Targets, features: Fit, predict: Fit) -> None:
    """How far the Spark figures reach beyond the runs: power law, extrapolation, views per viewer, fit check."""
    put = fig.put
    tail = eng["runs"][-2:]
    k = power_exponent([r["events_per_day"] for r in tail], [r["total_seconds"] for r in tail])
    put(
        "spark_power_law_exponent",
        k,
        "",
        "log(total_seconds ratio) / log(events_per_day ratio), two largest runs",
        "engine.json: runs[-2:].total_seconds",
    )
    power = tail[-1]["total_seconds"] * (t.events_per_day / tail[-1]["events_per_day"]) ** k
    cores = eng["cores"]
    put(
        "spark_core_hours_power_law",
        cores * power / 3600,
        "core-h",
        f"{cores} x {tail[-1]['total_seconds']} s x ({t.events_per_day:,.0f} / {tail[-1]['events_per_day']:,})"
        f"^{k:.2f} / 3600",
        "engine.json: runs[-2:].total_seconds",
    )
    put(
        "spark_extrapolation",
        t.events_per_day / eng["runs"][-1]["events_per_day"],
        "x",
        "target events per day / the largest run's events_per_day",
        "engine.json: runs[-1].events_per_day",
    )
    last = eng["runs"][-1]
    put(
        "views_per_viewer_measured",
        last["events_per_day"] / last["users"],
        "",
        "events_per_day / users of the largest run",
        "engine.json: runs[-1]",
    )
    put("views_per_viewer_target", t.events_per_day / t.users, "", "target events per day / target viewers")
    if len(eng["runs"]) > len(eng["runs"][-t.fit_points :]):
        (a_f, b_f), (a_p, b_p) = features, predict
        first = eng["runs"][0]
        line = (a_f + b_f * first["events_per_day"]) + (a_p + b_p * first["events_per_day"])
        put(
            "spark_fit_check",
            line,
            "s",
            f"the fit's nightly seconds at {first['events_per_day']:,} events/day (measured "
            f"{first['total_seconds']} s)",
            "engine.json: runs[0].total_seconds",
        )


def edge_state_bytes(fig: Figures, red: dict, t: Targets) -> float:
    """Redis used_memory of one edge's state (prior, trans, cache, the rest); returns the total."""
    put = fig.put
    cached = math.floor(t.cache_gb * GB / red["mean_bytes_per_cached_title"])
    put(
        "cached_titles_per_edge",
        cached,
        "titles",
        f"{t.cache_gb:g} GB / {red['mean_bytes_per_cached_title'] / GB:.2f} GB per prefetched title",
        "redis_memory.json: edges.mean_bytes_per_cached_title",
    )
    cache_m = pick_encoding(red["cache"], cached, red["zset_max_small"])
    sizes_m = pick_encoding(red["sizes"], cached, red["hash_max_small"])
    prior_n, trans_n = t.prior_share * t.titles, t.trans_share * t.titles
    parts = {
        "prior": prior_n * red["prior_bytes_per_entry"],
        "trans": trans_n * red["trans_bytes_per_entry"],
        "cache": cached * (cache_m["bytes_per_entry"] + sizes_m["bytes_per_entry"]),
        "other": red["meta_bytes"] + red["edge_beyond_memory_usage_bytes"],
    }
    put(
        "edge_prior_bytes",
        parts["prior"],
        "B",
        f"{prior_n:,.0f} titles x {red['prior_bytes_per_entry']:.1f} B",
        "redis_memory.json: edges.keys.prior",
    )
    put(
        "edge_trans_bytes",
        parts["trans"],
        "B",
        f"{trans_n:,.0f} titles x {red['trans_bytes_per_entry']:.1f} B",
        "redis_memory.json: edges.keys.trans",
    )
    put(
        "edge_cache_bytes",
        parts["cache"],
        "B",
        f"{cached:,} titles x ({cache_m['bytes_per_entry']:.1f} B {cache_m['encoding']} + "
        f"{sizes_m['bytes_per_entry']:.1f} B {sizes_m['encoding']})",
        "redis_memory.json: edges.keys.cache, .sizes, edges.large_cache",
    )
    put(
        "edge_other_bytes",
        parts["other"],
        "B",
        f"meta {red['meta_bytes']:.0f} B + table entries {red['edge_beyond_memory_usage_bytes']:.0f} B",
        "redis_memory.json: edges.keys.meta, edges.used_memory_beyond_memory_usage_per_edge",
    )
    return put(
        "redis_bytes_per_edge_state",
        sum(parts.values()),
        "B",
        "prior + trans + cache + other",
        "edge_prior_bytes",
        "edge_trans_bytes",
        "edge_cache_bytes",
        "edge_other_bytes",
    )


def redis_memory(fig: Figures, red: dict, t: Targets, per_edge: float) -> int:
    """Redis used_memory of all viewers, all edges and the shared keys; returns the primaries it needs."""
    put = fig.put
    per_viewer = put(
        "redis_bytes_per_viewer",
        red["bytes_per_viewer"],
        "B",
        f"used_memory slope over {red['viewers'] // 4:,}-{red['viewers']:,} viewers, top_k {red['top_k']}",
        "redis_memory.json: viewers.used_memory_bytes_per_viewer",
    )
    users_b = put(
        "redis_viewer_bytes_total",
        t.users * per_viewer,
        "B",
        f"{t.users:,} viewers x {per_viewer:.1f} B",
        "redis_bytes_per_viewer",
    )
    edges_b = put(
        "redis_edge_bytes_total",
        t.edges * per_edge,
        "B",
        f"{t.edges} edges x {per_edge / 1e6:.2f} MB",
        "redis_bytes_per_edge_state",
    )
    shared = put(
        "redis_shared_bytes",
        t.titles * red["catalog_bytes_per_title"] + red["empty_bytes"],
        "B",
        f"catalog {t.titles:,} x {red['catalog_bytes_per_title']:.1f} B + empty server and last_warm "
        f"{red['empty_bytes'] / 1e6:.2f} MB",
        "redis_memory.json: catalog.bytes_per_title, empty_server_used_memory, last_warm",
    )
    total = put(
        "redis_bytes_total",
        users_b + edges_b + shared,
        "B",
        "viewers + edges + catalog and fixed",
        "redis_viewer_bytes_total",
        "redis_edge_bytes_total",
        "redis_shared_bytes",
    )
    put(
        "redis_bytes_per_edge_with_viewers",
        per_edge + t.users / t.edges * per_viewer,
        "B",
        f"edge state + {t.users / t.edges:,.0f} viewers x {per_viewer:.1f} B",
        "redis_bytes_per_edge_state",
        "redis_bytes_per_viewer",
    )
    return put(
        "redis_primaries_for_memory",
        math.ceil(total / (t.gb_per_primary * GB)),
        "primaries",
        f"{total / GB:.2f} GB / {t.gb_per_primary:g} GB per primary",
        "redis_bytes_total",
    )


def peak_delivery(fig: Figures, dlv: dict, t: Targets, mem_primaries: int) -> int:
    """The peak request rate: delivery cores and nodes, Redis cores for decisions; returns the Redis primaries."""
    put = fig.put
    peak = put(
        "peak_requests_per_second",
        t.peak,
        "req/s",
        f"{t.peak_rps:,.0f} given"
        if t.peak_rps is not None
        else f"{t.peak_factor:g} x {t.events_per_day:,.0f} / 86400",
    )
    per_core = put(
        "decisions_per_second_per_core",
        dlv["decisions_per_second"] / dlv["cpus"],
        "req/s",
        f"{dlv['decisions_per_second']:,.0f} decisions/s saturated / {dlv['cpus']} cores "
        "(services, redis-server and wrk on the same cores)",
        "delivery.json: http.wrk_saturated.throughput_per_second, machine.cpus",
    )
    svc_cores = put(
        "delivery_cores",
        math.ceil(peak / (per_core * t.utilisation)),
        "cores",
        f"{peak:,.0f} / ({per_core:,.0f} x {t.utilisation:g} utilisation)",
        "peak_requests_per_second",
        "decisions_per_second_per_core",
    )
    put(
        "delivery_nodes",
        math.ceil(svc_cores / t.node_cores),
        "nodes",
        f"{svc_cores} cores / {t.node_cores} cores per node",
        "delivery_cores",
    )
    redis_cores = put(
        "redis_cores_for_decisions",
        peak * dlv["redis_us_per_decision"] / 1e6,
        "cores",
        f"{peak:,.0f}/s x {dlv['redis_us_per_decision']:.1f} µs of server time per decision",
        "delivery.json: inproc.server_microseconds_per_call.evalsha",
    )
    tput_primaries = put(
        "redis_primaries_for_decisions",
        math.ceil(redis_cores / t.utilisation),
        "primaries",
        f"{redis_cores:.2f} cores / {t.utilisation:g} utilisation (one core per primary)",
        "redis_cores_for_decisions",
    )
    primaries = put(
        "redis_primaries",
        max(mem_primaries, tput_primaries),
        "primaries",
        "the larger of memory and decisions",
        "redis_primaries_for_memory",
        "redis_primaries_for_decisions",
    )
    put(
        "peak_requests_per_edge",
        peak / t.edges,
        "req/s",
        f"{peak:,.0f} / {t.edges} edges (mean)",
        "peak_requests_per_second",
    )
    return primaries


def nightly_warm(fig: Figures, dlv: dict, red: dict, t: Targets, primaries: int) -> None:
    """The nightly warm's time: viewer keys, edge state, Redis busy per primary, one writer or several."""
    put = fig.put
    kps = dlv["warm_keys_per_second"]
    viewer_s = put(
        "warm_viewer_seconds_total",
        2 * t.users / kps,
        "s",
        f"2 x {t.users:,} keys / {kps:,.0f} keys/s",
        "delivery.json: warm.keys_per_second",
    )
    prior_n, trans_n = t.prior_share * t.titles, t.trans_share * t.titles
    scale = (prior_n + trans_n) / (red["prior_entries"] + red["trans_entries"])
    edge_s = put(
        "warm_edge_state_seconds_per_edge",
        red["edge_warm_seconds_per_edge"] * scale,
        "s",
        f"{red['edge_warm_seconds_per_edge']:.2f} s measured at {red['titles']:,} titles x {scale:.2f}",
        "redis_memory.json: edges.warm_seconds_per_edge",
    )
    put(
        "warm_followers_seconds_per_edge",
        red["edge_followers_seconds_per_edge"] * scale,
        "s",
        f"{red['edge_followers_seconds_per_edge']:.2f} s measured x {scale:.2f}",
        "redis_memory.json: edges.top_followers_seconds_per_edge",
    )
    busy = put(
        "warm_server_ms_per_edge",
        red["edge_server_us_per_edge"] / 1000 * scale,
        "ms",
        f"{red['edge_server_us_per_edge'] / 1000:.1f} ms measured (the slowest edge) x {scale:.2f}",
        "redis_memory.json: edges.server_microseconds_per_edge.max",
    )
    put(
        "warm_server_seconds_per_primary",
        busy / 1000 * math.ceil(t.edges / primaries),
        "s",
        f"{busy:.0f} ms x {math.ceil(t.edges / primaries)} edges per primary",
        "warm_server_ms_per_edge",
        "redis_primaries",
    )
    put(
        "warm_seconds_per_edge",
        2 * t.users / t.edges / kps + edge_s,
        "s",
        f"2 x {t.users / t.edges:,.0f} keys / {kps:,.0f} keys/s + {edge_s:.2f} s edge state",
        "delivery.json: warm.keys_per_second",
        "warm_edge_state_seconds_per_edge",
    )
    single = put(
        "warm_seconds_one_writer",
        viewer_s + t.edges * edge_s,
        "s",
        f"{viewer_s:.0f} s viewers + {t.edges} x {edge_s:.2f} s edges",
        "warm_viewer_seconds_total",
        "warm_edge_state_seconds_per_edge",
    )
    writers = t.warm_writers or primaries
    put(
        "warm_writers",
        writers,
        "writers",
        "given" if t.warm_writers else "one stream per Redis primary, as the warm streams a cluster",
        "redis_primaries",
    )
    put(
        "warm_seconds_parallel",
        single / writers,
        "s",
        f"{single:.0f} s / {writers} writers",
        "warm_seconds_one_writer",
        "warm_writers",
    )


def model(inputs: dict, t: Targets) -> dict:
    """Every figure of the capacity model: {name: {value, unit, formula, sources}}."""
    eng, dlv, red = inputs["engine"], inputs["delivery"], inputs["redis"]
    if t.top_k != red["top_k"]:
        raise ValueError(
            f"redis_memory.json was measured with top_k={red['top_k']}, the target has {t.top_k}: "
            f"rerun python bench/redis_memory.py --top-k {t.top_k}"
        )
    fig = Figures()
    features, predict = spark_nightly(fig, eng, t)
    spark_checks(fig, eng, t, features, predict)
    per_edge = edge_state_bytes(fig, red, t)
    mem_primaries = redis_memory(fig, red, t, per_edge)
    primaries = peak_delivery(fig, dlv, t, mem_primaries)
    nightly_warm(fig, dlv, red, t, primaries)
    return fig.table


# ---------------------------------------------------------------- output


def _num(v: float, unit: str) -> str:
    if unit == "B":
        return f"{v / GB:,.2f} GB" if v >= GB else f"{v / 1e6:,.2f} MB" if v >= 1e6 else f"{v:,.1f} B"
    if unit == "s":
        return f"{v / 3600:,.2f} h" if v >= 3 * 3600 else f"{v / 60:,.1f} min" if v >= 300 else f"{v:,.1f} s"
    if unit == "core-s":
        return f"{v * 1e6:,.2f} core-µs"
    if unit == "core-h":
        return f"{v:,.1f} core-h"
    if unit in ("req/s", "titles"):
        return f"{v:,.0f}" + ("/s" if unit == "req/s" else " titles")
    if unit == "ms":
        return f"{v:,.0f} ms"
    if unit in ("cores", "nodes", "primaries", "writers"):
        return f"{v:,}" if isinstance(v, int) else f"{v:,.2f}"
    if unit == "x":
        return f"{v:,.0f} x"
    return f"{v:,.2f}"


SECTIONS = [
    (
        "Spark, one night (features + predict)",
        [
            ("spark_core_hours_low", "core-hours, predict scaled by viewers"),
            ("spark_core_hours_high", "core-hours, predict scaled by events"),
            ("spark_features_core_hours", "of which features"),
            ("spark_predict_core_hours_by_viewers", "predict, scaled by viewers"),
            ("spark_predict_core_hours_by_events", "predict, scaled by events"),
            ("spark_fixed_wall_seconds", "fixed wall time per night (the fits' intercepts)"),
            ("spark_submit_seconds", "of which bare spark-submit start-up"),
            ("spark_cluster_cores_low", "executor cores to finish in the window, low"),
            ("spark_cluster_cores_high", "executor cores to finish in the window, high"),
            ("spark_core_hours_power_law", "core-hours on a power law instead (not used)"),
        ],
    ),
    (
        "Redis memory (used_memory)",
        [
            ("redis_bytes_per_viewer", "per viewer (2 keys)"),
            ("cached_titles_per_edge", "titles in an edge cache"),
            ("edge_prior_bytes", "edge state: prior"),
            ("edge_trans_bytes", "edge state: trans"),
            ("edge_cache_bytes", "edge state: cache + sizes"),
            ("edge_other_bytes", "edge state: meta and table entries"),
            ("redis_bytes_per_edge_state", "edge state, per edge"),
            ("redis_bytes_per_edge_with_viewers", "per edge, with its share of viewers"),
            ("redis_viewer_bytes_total", "all viewer keys"),
            ("redis_edge_bytes_total", "all edge state"),
            ("redis_shared_bytes", "catalog and fixed"),
            ("redis_bytes_total", "total, one copy"),
            ("redis_primaries_for_memory", "Redis primaries for memory"),
        ],
    ),
    (
        "Warm, every night",
        [
            ("warm_seconds_per_edge", "per edge (its viewers' keys + its state)"),
            ("warm_viewer_seconds_total", "all viewer keys, one writer"),
            ("warm_edge_state_seconds_per_edge", "edge state, per edge"),
            ("warm_followers_seconds_per_edge", "ranking followers alone (in the warm's process, timed apart)"),
            ("warm_server_ms_per_edge", "Redis busy with one edge's transaction"),
            ("warm_server_seconds_per_primary", "Redis busy with edge transactions, per primary"),
            ("warm_seconds_one_writer", "everything, one writer"),
            ("warm_writers", "parallel writers (not what the warm does today)"),
            ("warm_seconds_parallel", "everything, split over the writers"),
        ],
    ),
    (
        "Delivery at the peak",
        [
            ("peak_requests_per_second", "peak requests"),
            ("peak_requests_per_edge", "per edge, mean"),
            ("decisions_per_second_per_core", "measured decisions per core"),
            ("delivery_cores", "delivery service cores"),
            ("delivery_nodes", "delivery nodes"),
            ("redis_cores_for_decisions", "Redis server cores busy with decisions"),
            ("redis_primaries_for_decisions", "Redis primaries for the decisions"),
            ("redis_primaries", "Redis primaries (memory or decisions, the larger)"),
        ],
    ),
]


def measured_files(f: dict, name: str) -> list[str]:
    """The measurement files a figure comes from, through the figures it is computed from."""
    out: set[str] = set()
    for src in f[name]["sources"]:
        if src in f:
            out.update(measured_files(f, src))
        elif ".json" in src:
            out.add(src.split(":")[0])
    return sorted(out)


def summary(f: dict) -> list[tuple[str, str]]:
    def v(name: str) -> str:
        return _num(f[name]["value"], f[name]["unit"])

    return [
        (
            "Spark core-hours per night (features + predict)",
            f"{f['spark_core_hours_low']['value']:,.1f} to {v('spark_core_hours_high')}, "
            f"plus {v('spark_fixed_wall_seconds')} of fixed wall time",
        ),
        (
            "Spark executor cores for the nightly window",
            f"{v('spark_cluster_cores_low')} to {v('spark_cluster_cores_high')}",
        ),
        (
            "Redis memory in total (one copy)",
            f"{v('redis_bytes_total')}: viewers {v('redis_viewer_bytes_total')}, "
            f"edge state {v('redis_edge_bytes_total')}",
        ),
        (
            "Redis memory per edge",
            f"{v('redis_bytes_per_edge_state')} of edge state, "
            f"{v('redis_bytes_per_edge_with_viewers')} with its viewers",
        ),
        ("Warm per edge / all of it, one writer", f"{v('warm_seconds_per_edge')} / {v('warm_seconds_one_writer')}"),
        (
            "Delivery at the peak",
            f"{v('delivery_nodes')} nodes ({v('delivery_cores')} cores) for {v('peak_requests_per_second')}",
        ),
        ("Redis primaries", v("redis_primaries")),
    ]


def render(inputs: dict, t: Targets, f: dict) -> str:
    """The generated part of docs/capacity.md (also what the script prints)."""
    eng, red, dlv = inputs["engine"], inputs["redis"], inputs["delivery"]
    lines = ["### Targets and planning choices", "", "| target | value |", "| --- | ---: |"]
    lines += [
        f"| viewers | {t.users:,} |",
        f"| titles | {t.titles:,} |",
        f"| edges | {t.edges:,} |",
        f"| events a day | {t.events_per_day:,.0f} |",
        f"| peak requests | {_num(f['peak_requests_per_second']['value'], 'req/s')} |",
        f"| cache per edge | {t.cache_gb:g} GB |",
        f"| titles per viewer (top_k) | {t.top_k} |",
        f"| feature window | {t.window_days} days |",
        f"| planned utilisation of measured capacity | {t.utilisation:g} |",
        f"| nightly Spark window | {t.spark_hours:g} h |",
        f"| delivery node | {t.node_cores} cores |",
        f"| used_memory per Redis primary | {t.gb_per_primary:g} GB |",
        "",
    ]
    lines += ["### Measured unit costs", "", "| unit cost | value | from | rerun with |", "| --- | ---: | --- | --- |"]
    runs = "; ".join(
        f"{r['events'] / 1e6:g} M ({r['events_per_day'] / 1e6:g} M a day): {r['features_seconds']} + "
        f"{r['predict_seconds']} s"
        for r in eng["runs"]
    )
    unit_rows = [
        (
            f"nightly wall time on {eng['master']}, features + predict, by the run's events",
            runs,
            "engine.json: runs[].features_seconds, predict_seconds",
            "engine.json",
        ),
        *[
            (label, _num(f[key]["value"], "core-s"), f"{f[key]['sources'][0]}: {f[key]['formula']}", "engine.json")
            for key, label in (
                ("features_core_seconds_per_event", "features, core time per event a day"),
                ("predict_core_seconds_per_event", "predict, core time per event a day"),
                ("predict_core_seconds_per_viewer", "predict, core time per viewer"),
            )
        ],
        (
            "delivery decisions per second, saturated",
            f"{dlv['decisions_per_second']:,.0f}/s on {dlv['cpus']} cores, p99 {dlv['p99_ms']} ms",
            "delivery.json: http.wrk_saturated",
            "delivery.json",
        ),
        (
            "Redis server time per decision",
            f"{dlv['redis_us_per_decision']:.1f} µs",
            "delivery.json: inproc.server_microseconds_per_call.evalsha",
            "delivery.json",
        ),
        (
            "warm, viewer keys per second (one writer)",
            f"{dlv['warm_keys_per_second']:,.0f}/s",
            f"delivery.json: warm.keys_per_second ({dlv['warm_keys']:,} keys)",
            "delivery.json",
        ),
        (
            "memory per viewer, 2 keys",
            f"{red['bytes_per_viewer']:.1f} B (a plain 10-byte key: {red['reference_bytes_per_key']:.1f} B)",
            "redis_memory.json: viewers.used_memory_bytes_per_viewer, reference",
            "redis_memory.json",
        ),
        (
            "memory per title in an edge's prior / trans",
            f"{red['prior_bytes_per_entry']:.1f} / {red['trans_bytes_per_entry']:.1f} B",
            "redis_memory.json: edges.keys.prior, .trans",
            "redis_memory.json",
        ),
        (
            "memory per cached title (cache + sizes)",
            " ; ".join(
                f"{c['entries']:,.0f} titles: {c['bytes_per_entry']:.1f} + {s['bytes_per_entry']:.1f} B"
                for c, s in zip(red["cache"], red["sizes"])
            ),
            "redis_memory.json: edges.keys, edges.large_cache",
            "redis_memory.json",
        ),
        (
            f"memory per edge state, {red['titles']:,} titles (check)",
            _num(red["bytes_per_edge_measured"], "B"),
            "redis_memory.json: edges.used_memory_bytes_per_edge",
            "redis_memory.json",
        ),
        (
            "memory per catalog title",
            f"{red['catalog_bytes_per_title']:.1f} B",
            "redis_memory.json: catalog.bytes_per_title",
            "redis_memory.json",
        ),
        (
            "warm, edge state per edge",
            f"{red['edge_warm_seconds_per_edge']:.2f} s at {red['titles']:,} titles; ranking followers alone"
            f" {red['edge_followers_seconds_per_edge']:.2f} s",
            "redis_memory.json: edges.warm_seconds_per_edge, .top_followers_seconds_per_edge",
            "redis_memory.json",
        ),
        (
            "Redis server time of one edge's warm transaction",
            f"{red['edge_server_us_per_edge'] / 1000:.1f} ms",
            "redis_memory.json: edges.server_microseconds_per_edge.max (slowlog)",
            "redis_memory.json",
        ),
    ]
    for name, value, src, cmd in unit_rows:
        lines.append(f"| {name} | {value} | {src} | `{COMMANDS[cmd]}` |")
    lines.append("")
    lines += ["### Summary", "", "| figure | value |", "| --- | ---: |"]
    for label, value in summary(f):
        lines.append(f"| {label} | {value} |")
    lines.append("")
    for title, rows in SECTIONS:
        lines += [f"### {title}", "", "| figure | value | how | from |", "| --- | ---: | --- | --- |"]
        for key, label in rows:
            if key in f:
                lines.append(
                    f"| {label} | {_num(f[key]['value'], f[key]['unit'])} | {f[key]['formula']} | "
                    f"{', '.join(measured_files(f, key)) or 'targets'} |"
                )
        lines.append("")
    fitted = ", ".join(f"{r['events_per_day']:,}" for r in eng["runs"][-t.fit_points :])
    notes = [
        f"The largest engine run had {eng['runs'][-1]['events_per_day']:,} events a day; the target is "
        f"{_num(f['spark_extrapolation']['value'], 'x')} that. The fit uses the {min(t.fit_points, len(eng['runs']))} "
        f"largest runs ({fitted} events a day).",
        f"The engine runs hold {f['views_per_viewer_measured']['value']:.0f} views per viewer a day; the target has "
        f"{f['views_per_viewer_target']['value']:.0f}, so events and viewers cannot both scale as they did in the "
        "runs: hence a low and a high figure for predict.",
        f"The engine runs used a {eng['window_days']}-day window; the target's {t.window_days} days scale the "
        f"features job's per-event cost by {t.window_days}/{eng['window_days']}.",
        f"The power law through the two largest runs has exponent {f['spark_power_law_exponent']['value']:.2f}.",
    ]
    if "spark_fit_check" in f:
        notes.append(
            f"Check: the fitted line gives {f['spark_fit_check']['value']:.0f} s at the smallest run, "
            f"which took {eng['runs'][0]['total_seconds']} s."
        )
    notes.append(
        f"Redis {red['version']} ({red['allocator']} malloc) measured {red['viewers']:,} viewers with ids "
        f"of a {red['id_space']:,}-viewer population and {red['edges']} edges of {red['titles']:,} titles."
    )
    other = inputs.get("redis_other_build")
    if other:
        notes.append(
            f"The same memory run on Redis {other['version']} ({other['allocator']}, `{OTHER_BUILD_COMMAND}`) "
            f"measured {other['bytes_per_viewer']:.1f} B per viewer and {_num(other['bytes_per_edge_measured'], 'B')} "
            f"per edge state of {other['titles']:,} titles: "
            f"{other['bytes_per_viewer'] / red['bytes_per_viewer']:.2f} and "
            f"{other['bytes_per_edge_measured'] / red['bytes_per_edge_measured']:.2f} times the figures used here."
        )
    if red["viewer_keys_per_second"]:
        notes.append(
            f"The memory run, at a load average of {red['loadavg']:.1f} on {dlv['cpus']} cores, wrote viewer "
            f"keys at {red['viewer_keys_per_second']:,.0f}/s; the warm's rate above is delivery.json's."
        )
    lines += ["### Notes computed from the inputs", ""] + [f"- {n}" for n in notes] + [""]
    blob = json.dumps({"targets": dataclasses.asdict(t), "inputs": inputs}, indent=1, sort_keys=True)
    lines += ["<!-- capacity:inputs", blob, "-->"]
    return "\n".join(lines) + "\n"


def doc_block(text: str) -> str:
    """What lies between the markers of docs/capacity.md."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n") + "\n"


def doc_inputs(text: str) -> tuple[Targets, dict]:
    """The targets and inputs the page's figures were computed from."""
    blob = json.loads(INPUTS_RE.search(doc_block(text)).group(1))
    return Targets(**blob["targets"]), blob["inputs"]


def write_doc(block: str, path: Path = DOC) -> None:
    text = path.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:start] + "\n" + block + text[end:])


def main(argv: list[str] | None = None) -> int:
    d = Targets()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=d.users)
    p.add_argument("--titles", type=int, default=d.titles)
    p.add_argument("--edges", type=int, default=d.edges)
    p.add_argument("--events", type=float, default=d.events_per_day, help="events a day")
    p.add_argument("--peak-factor", type=float, default=d.peak_factor, help="peak rate / the day's mean rate")
    p.add_argument("--peak-rps", type=float, default=None, help="peak requests per second (overrides the factor)")
    p.add_argument("--cache-gb", type=float, default=d.cache_gb)
    p.add_argument("--top-k", type=int, default=d.top_k)
    p.add_argument("--window-days", type=int, default=d.window_days)
    p.add_argument("--prior-share", type=float, default=d.prior_share)
    p.add_argument("--trans-share", type=float, default=d.trans_share)
    p.add_argument("--fit-points", type=int, default=d.fit_points)
    p.add_argument("--spark-hours", type=float, default=d.spark_hours)
    p.add_argument("--utilisation", type=float, default=d.utilisation)
    p.add_argument("--node-cores", type=int, default=d.node_cores)
    p.add_argument("--gb-per-primary", type=float, default=d.gb_per_primary)
    p.add_argument("--warm-writers", type=int, default=None)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--write-doc", action="store_true", help=f"refresh the figures in {DOC.relative_to(ROOT)}")
    args = p.parse_args(argv)
    t = Targets(
        users=args.users,
        titles=args.titles,
        edges=args.edges,
        events_per_day=args.events,
        peak_factor=args.peak_factor,
        peak_rps=args.peak_rps,
        cache_gb=args.cache_gb,
        top_k=args.top_k,
        window_days=args.window_days,
        prior_share=args.prior_share,
        trans_share=args.trans_share,
        fit_points=args.fit_points,
        spark_hours=args.spark_hours,
        utilisation=args.utilisation,
        node_cores=args.node_cores,
        gb_per_primary=args.gb_per_primary,
        warm_writers=args.warm_writers,
    )
    if args.write_doc and t != Targets():
        p.error("--write-doc writes the page for the default targets only")
    missing = [n for n in MEASUREMENTS if not (args.results / n).exists()]
    if missing and args.write_doc:
        p.error(f"--write-doc needs the measurements; missing in {args.results}: {', '.join(missing)}")
    if missing:
        # A fresh checkout has no measurements: the page keeps the unit costs its figures use.
        print(f"no {', '.join(missing)} in {args.results}: using the unit costs kept in {DOC.relative_to(ROOT)}")
        inputs = doc_inputs(DOC.read_text())[1]
    else:
        inputs = load_inputs(args.results)
    try:
        figures = model(inputs, t)
    except ValueError as e:
        p.error(str(e))
    block = render(inputs, t, figures)
    print(block.split("<!-- capacity:inputs")[0], end="")
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / "capacity.json"
    out.write_text(
        json.dumps({"targets": dataclasses.asdict(t), "inputs": inputs, "figures": figures}, indent=2, sort_keys=True)
        + "\n"
    )
    print(f"results in {out}")
    if args.write_doc:
        write_doc(block)
        print(f"figures written to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
