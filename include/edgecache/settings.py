"""One place for configuration: environment variables with defaults that embed.

Nothing here is a secret. Connections for Airflow tasks come from Airflow's own
connection store (``spark_default``, ``redis_default``); the CLI reads the URLs below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass(frozen=True)
class WorkloadParams:
    """Knobs of the synthetic streaming workload for one day."""

    users: int = 1000
    edges: int = 4
    titles: int = 400
    events: int = 20000
    seed: int = 42
    alpha: float = 0.9  # Zipf exponent of title popularity
    binge_prob: float = 0.6  # chance the next view continues the series
    bad_rate: float = 0.001  # share of malformed lines, to exercise the quarantine

    @classmethod
    def from_env(cls) -> WorkloadParams:
        d = cls()
        return cls(
            users=_env_int("EDGECACHE_USERS", d.users),
            edges=_env_int("EDGECACHE_EDGES", d.edges),
            titles=_env_int("EDGECACHE_TITLES", d.titles),
            events=_env_int("EDGECACHE_EVENTS", d.events),
            seed=_env_int("EDGECACHE_SEED", d.seed),
            alpha=_env_float("EDGECACHE_ALPHA", d.alpha),
            binge_prob=_env_float("EDGECACHE_BINGE_PROB", d.binge_prob),
            bad_rate=_env_float("EDGECACHE_BAD_RATE", d.bad_rate),
        )


@dataclass(frozen=True)
class Settings:
    """Runtime settings read from the environment."""

    data_dir: Path = field(default_factory=lambda: PROJECT_ROOT / "data")
    local_dir: Path = field(default_factory=lambda: PROJECT_ROOT / ".local")  # Airflow home, Redis, logs
    spark_master: str = "local[*]"
    redis_url: str | None = None  # None: the project starts an embedded redis-server
    pushgateway_url: str | None = None  # None: metrics go to a Prometheus text file
    top_k: int = 10
    cache_capacity: int = 50  # titles per edge cache
    window_days: int = 7
    ttl_seconds: int = 2 * 24 * 3600  # predictions outlive one missed nightly run, not two

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
            cache_capacity=_env_int("EDGECACHE_CACHE_CAPACITY", d.cache_capacity),
            window_days=_env_int("EDGECACHE_WINDOW_DAYS", d.window_days),
            ttl_seconds=_env_int("EDGECACHE_TTL_SECONDS", d.ttl_seconds),
        )
