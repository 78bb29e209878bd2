"""One place for configuration: environment variables with defaults that embed.

Nothing here is a secret. Connections for Airflow tasks come from Airflow's own
connection store (``spark_default``, ``redis_default``); the CLI reads the URLs below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# The source checkout's root (include/edgecache/settings.py -> two levels up).
PROJECT_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_DATE = "2025-04-12"  # the seed tutorial's example day


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _env_str(name: str, default: str) -> str:
    raw = os.environ.get(name)
    return default if raw is None or raw.strip() == "" else raw.strip()


@dataclass(frozen=True)
class WorkloadParams:
    """Knobs of the synthetic streaming workload (see edgecache.simulate.workload for the model).

    Each knob can also be set by the environment variable ``EDGECACHE_<NAME>``.
    """

    workload: str = "catalog"  # the model: catalog (Zipf catalog, launches) or snm (shot noise, edgecache.simulate.snm)
    users: int = 10000
    edges: int = 8
    titles: int = 1000
    events: int = 25000  # expected views per day
    seed: int = 42
    alpha: float = 0.9  # Zipf exponent of title popularity (video: 0.6-1.2)
    edge_size_ratio: float = 10.0  # viewers at the largest edge / at the smallest
    regional_skew: float = 1.0  # Dirichlet concentration of edge genre tastes: lower, more regional
    binge_prob: float = 0.6  # chance a series session goes on to the next episode
    follow_prob: float = 0.5  # chance a viewer resumes their followed series on a day
    abandon_prob: float = 0.15  # chance a view stops early
    peak_hour: int = 21  # hour of the evening peak of session starts
    launch_boost: float = 20.0  # extra weight of a title on its release day
    launch_decay_days: float = 7.0  # e-folding time of the launch burst
    bad_rate: float = 0.001  # share of malformed lines, to exercise the quarantine
    # Shapes that break assumptions, for either model.
    series_share: float = 0.3  # share of catalog items that are series (0: movies only)
    releases_per_day: int = 0  # new items released every day of 2025 (0: the model's own schedule)
    # Cold start (either model): new edges that open on a day, taking viewers from the others.
    new_edges: int = 0  # edges that open on new_edge_day
    new_edge_day: str = ""  # the day they open (YYYY-MM-DD; required when new_edges > 0)
    # The shot noise model only.
    snm_lifetime_days: float = 10.0  # mean lifetime of a title's burst of requests
    snm_shape: str = "exp"  # how a burst fades: exp (exponential decay) or uniform (flat, then gone)

    @classmethod
    def from_env(cls) -> WorkloadParams:
        values: dict[str, Any] = {}
        for f in fields(cls):
            default = getattr(cls, f.name)
            reader = _env_str if isinstance(default, str) else _env_int if isinstance(default, int) else _env_float
            values[f.name] = reader(f"EDGECACHE_{f.name.upper()}", default)
        return cls(**values)


# The knobs that take one of a few names: argparse choices and the DAG params' enums.
WORKLOAD_CHOICES = {"workload": ("catalog", "snm"), "snm_shape": ("exp", "uniform")}


# What each workload knob means: --help of the generate job, DAG params, README.
WORKLOAD_HELP = {
    "workload": "workload model: catalog (Zipf catalog with launches) or snm (shot noise model: "
    "titles arrive every day and burst, then fade)",
    "users": "viewers",
    "edges": "edge sites",
    "titles": "catalog size (movies and episodes)",
    "events": "expected views in the day",
    "seed": "random seed",
    "alpha": "Zipf exponent of title popularity (video: 0.6-1.2)",
    "edge_size_ratio": "viewers at the largest edge / at the smallest",
    "regional_skew": "spread of genre tastes between edges (Dirichlet concentration; lower = more regional; "
    "0 = none, every edge has the same taste)",
    "binge_prob": "chance a series session goes on to the next episode",
    "follow_prob": "chance a viewer resumes their followed series on a day (catalog model)",
    "abandon_prob": "chance a view stops early (short duration)",
    "peak_hour": "hour of the evening peak of session starts (0-23)",
    "launch_boost": "extra weight of a title on its release day (catalog model)",
    "launch_decay_days": "e-folding time of a release's launch burst, in days (catalog model)",
    "bad_rate": "share of malformed lines, to exercise the quarantine",
    "series_share": "share of catalog items that are series rather than movies (0: movies only)",
    "releases_per_day": "new movies or series released on every day of 2025 (the catalog must hold 365 x "
    "this items; 0: the model's own schedule)",
    "new_edges": "new edges that open on --new-edge-day, each taking as many viewers as the middle edge "
    "has, with a regional taste of its own (catalog model; 0: none)",
    "new_edge_day": "the day the new edges open (YYYY-MM-DD): from that day their viewers are logged there",
    "snm_lifetime_days": "snm: mean lifetime of a title's burst of requests, in days",
    "snm_shape": "snm: shape of a burst: exp (exponential decay) or uniform (flat over its lifetime)",
}


def _schedule(raw: str | None, default: str | None) -> str | None:
    if raw is None or not raw.strip():
        return default
    return None if raw.strip().lower() == "none" else raw.strip()


@dataclass(frozen=True)
class Settings:
    """Runtime settings read from the environment."""

    data_dir: Path = field(default_factory=lambda: PROJECT_ROOT / "data")
    local_dir: Path = field(default_factory=lambda: PROJECT_ROOT / ".local")  # Airflow home, Redis, logs
    spark_master: str = "local[*]"
    redis_url: str | None = None  # None: the project starts an embedded redis-server
    pushgateway_url: str | None = None  # None: metrics go to a Prometheus text file
    top_k: int = 10
    cache_gb: float = 90.0  # prefetch capacity per edge cache (about 5 % of the default catalog)
    window_days: int = 7
    decay_days: float = 2.0  # e-folding time of the popularity decay
    model: str = "learned"  # or "simple": the foundation's tiered model, kept as a baseline
    training: str = "federated"  # how the learned scorer trains: federated, central or local
    ttl_seconds: int = 2 * 24 * 3600  # predictions outlive one missed nightly run, not two
    origin_latency_ms: float = 0.0  # simulated origin fetch on a delivery miss
    edge_clock: str = "wall"  # request times an edge service accepts: wall (live) or replay (a day's logs)
    rate_limit: float = 0.0  # edge service requests per second per client address; 0: no limit
    rate_burst: float = 0.0  # requests at once above the rate; 0: one second's worth
    edge_workers: int = 1  # processes of one edge service sharing its port
    schedule: str | None = "@daily"  # the DAG's schedule; EDGECACHE_SCHEDULE=none: manual runs only
    source: str = "generate"  # where a night's logs come from: generate (synthetic) or ingest (your own)
    logs_path: str = ""  # with source=ingest: folder or glob of your logs ({date} stands for the day)
    catalog_path: str = ""  # with source=ingest: your catalog (CSV or Parquet); empty: keep or infer one
    # Spark's reliable checkpoints (a folder or URI every executor reaches: HDFS, S3, ... on a
    # cluster); empty: <local_dir>/spark-checkpoints
    checkpoint_dir: str = ""

    @classmethod
    def from_env(cls) -> Settings:
        d = cls()
        return cls(
            data_dir=Path(os.environ.get("EDGECACHE_DATA_DIR") or d.data_dir).resolve(),
            local_dir=Path(os.environ.get("EDGECACHE_LOCAL_DIR") or d.local_dir).resolve(),
            spark_master=os.environ.get("SPARK_MASTER") or d.spark_master,
            redis_url=os.environ.get("REDIS_URL") or None,
            pushgateway_url=os.environ.get("PUSHGATEWAY_URL") or None,
            top_k=_env_int("EDGECACHE_TOP_K", d.top_k),
            cache_gb=_env_float("EDGECACHE_CACHE_GB", d.cache_gb),
            window_days=_env_int("EDGECACHE_WINDOW_DAYS", d.window_days),
            decay_days=_env_float("EDGECACHE_DECAY_DAYS", d.decay_days),
            model=os.environ.get("EDGECACHE_MODEL") or d.model,
            training=os.environ.get("EDGECACHE_TRAINING") or d.training,
            ttl_seconds=_env_int("EDGECACHE_TTL_SECONDS", d.ttl_seconds),
            origin_latency_ms=_env_float("EDGECACHE_ORIGIN_LATENCY_MS", d.origin_latency_ms),
            edge_clock=_env_str("EDGECACHE_CLOCK", d.edge_clock),
            rate_limit=_env_float("EDGECACHE_RATE_LIMIT", d.rate_limit),
            rate_burst=_env_float("EDGECACHE_RATE_BURST", d.rate_burst),
            edge_workers=_env_int("EDGECACHE_WORKERS", d.edge_workers),
            schedule=_schedule(os.environ.get("EDGECACHE_SCHEDULE"), d.schedule),
            source=os.environ.get("EDGECACHE_SOURCE") or d.source,
            logs_path=os.environ.get("EDGECACHE_LOGS_PATH") or d.logs_path,
            catalog_path=os.environ.get("EDGECACHE_CATALOG_PATH") or d.catalog_path,
            checkpoint_dir=os.environ.get("EDGECACHE_CHECKPOINT_DIR") or d.checkpoint_dir,
        )

    def spark_checkpoint_dir(self) -> str:
        return self.checkpoint_dir or str(self.local_dir / "spark-checkpoints")
