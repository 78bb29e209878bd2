"""Spark job: validate day D's logs (quarantining bad lines) and build the feature tables."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from edgecache.features import edge_popularity, transitions, user_features
from edgecache.jobs.common import base_parser, positive_int, run_job
from edgecache.layout import Layout
from edgecache.settings import Settings
from edgecache.validate import accepted, classify, quarantined


def build_parser() -> argparse.ArgumentParser:
    d = Settings.from_env()
    p = base_parser("Validate a day of logs and build per-user, per-edge and transition features.")
    p.add_argument(
        "--window-days", type=positive_int, default=d.window_days,
        help=f"days of history, ending at --date, that the features cover (default {d.window_days})",
    )
    return p


def window_dates(date: str, days: int) -> list[str]:
    end = dt.date.fromisoformat(date)
    return [(end - dt.timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.data_dir.resolve())
    date = args.date
    logs = layout.logs(date)
    if not logs.exists():
        raise FileNotFoundError(f"no logs for {date} at {logs}: run the generate step first")

    lines = spark.read.text(str(logs)).select("value", F.col("_metadata.file_path").alias("source"))
    classified = classify(lines).cache()
    accepted(classified).write.mode("overwrite").parquet(str(layout.events(date)))
    quarantined(classified).write.mode("overwrite").json(str(layout.quarantine(date)))
    active_users = spark.read.parquet(str(layout.events(date))).select("user_id").distinct().count()
    counts = {
        (r["reason"] or "accepted"): r["n"]
        for r in classified.groupBy("reason").agg(F.count("*").alias("n")).collect()
    }
    classified.unpersist()
    lines_in = sum(counts.values())
    accepted_n = counts.pop("accepted", 0)

    days = [d for d in window_dates(date, args.window_days) if layout.events(d).exists()]
    events = spark.read.parquet(*[str(layout.events(d)) for d in days]).cache()
    outputs = {
        "users": user_features(events),
        "transitions": transitions(events),
        "popularity": edge_popularity(events),
    }
    rows = {}
    for name, df in outputs.items():
        df.write.mode("overwrite").parquet(str(layout.features(date, name)))
        rows[name] = spark.read.parquet(str(layout.features(date, name))).count()
    events.unpersist()
    return {
        "lines_in": lines_in,
        "accepted": accepted_n,
        "quarantined": sum(counts.values()),
        "active_users": active_users,
        "quarantined_by_reason": dict(sorted(counts.items())),
        "window_days_found": days,
        "feature_rows": rows,
        "output": str(layout.features(date, "")),
    }


def main(argv: list[str] | None = None) -> int:
    return run_job("features", build_parser(), run, argv)
