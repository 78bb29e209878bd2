"""Spark job: validate day D's logs (quarantining bad lines) and build the feature tables.

Features are built for D and, when they are missing, for D-1: the predict step trains on
D-1's features against what viewers watched on D.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from edgecache.features import build_features
from edgecache.jobs.common import base_parser, positive_float, positive_int, run_job
from edgecache.layout import Layout, read_json, write_json_atomic
from edgecache.settings import Settings
from edgecache.validate import accepted, classify, quarantined


def build_parser() -> argparse.ArgumentParser:
    d = Settings.from_env()
    p = base_parser("Validate the logs of the window and build the feature tables for day D (and D-1).")
    p.add_argument(
        "--window-days", type=positive_int, default=d.window_days,
        help=f"days of history, ending at --date, that the features cover (default {d.window_days})",
    )
    p.add_argument(
        "--decay-days", type=positive_float, default=d.decay_days,
        help=f"e-folding time of the popularity decay, in days (default {d.decay_days})",
    )
    return p


def window_dates(date: str, days: int) -> list[str]:
    end = dt.date.fromisoformat(date)
    return [(end - dt.timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]


def validate_day(spark: SparkSession, layout: Layout, date: str) -> dict[str, int]:
    """Split a day's log lines into events and quarantine; return the counts by reason."""
    lines = spark.read.text(str(layout.logs(date))).select("value", F.col("_metadata.file_path").alias("source"))
    classified = classify(lines).cache()
    accepted(classified).write.mode("overwrite").parquet(str(layout.events(date)))
    quarantined(classified).write.mode("overwrite").json(str(layout.quarantine(date)))
    counts = {
        (r["reason"] or "accepted"): r["n"]
        for r in classified.groupBy("reason").agg(F.count("*").alias("n")).collect()
    }
    classified.unpersist()
    return counts


def manifest(cutoff: str, args: argparse.Namespace, days: list[str]) -> dict[str, Any]:
    return {"cutoff": cutoff, "window_days": args.window_days, "decay_days": args.decay_days, "days": days}


def write_features(spark: SparkSession, layout: Layout, events: DataFrame, catalog: DataFrame, cutoff: str,
                   args: argparse.Namespace) -> dict[str, int]:
    """Build and write every feature table for ``cutoff``; return rows per table."""
    days = [d for d in window_dates(cutoff, args.window_days) if layout.events(d).exists()]
    rows = {}
    for name, df in build_features(events, catalog, cutoff, args.window_days, args.decay_days).items():
        df.write.mode("overwrite").parquet(str(layout.features(cutoff, name)))
        rows[name] = spark.read.parquet(str(layout.features(cutoff, name))).count()
    # Written last: the predict step trusts a day's features only when this matches.
    write_json_atomic(layout.features(cutoff, "manifest.json"), manifest(cutoff, args, days))
    return rows


def features_ready(layout: Layout, cutoff: str, args: argparse.Namespace) -> bool:
    path = layout.features(cutoff, "manifest.json")
    if not path.exists():
        return False
    m = read_json(path)
    return m["window_days"] == args.window_days and m["decay_days"] == args.decay_days


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.data_dir.resolve())
    date = args.date
    logs = layout.logs(date)
    if not logs.exists():
        raise FileNotFoundError(f"no logs for {date} at {logs}: run the generate step first")

    counts = validate_day(spark, layout, date)
    active_users = spark.read.parquet(str(layout.events(date))).select("user_id").distinct().count()
    lines_in = sum(counts.values())
    accepted_n = counts.pop("accepted", 0)

    # The window of D and of D-1 (yesterday's features train today's model): validate any
    # day whose logs are there but whose events are not (a first run, or a backfill).
    previous = (dt.date.fromisoformat(date) - dt.timedelta(days=1)).isoformat()
    span = window_dates(date, args.window_days + 1)
    backfilled = [d for d in span[:-1] if not layout.events(d).exists() and layout.logs(d).exists()]
    for d in backfilled:
        validate_day(spark, layout, d)
    days = [d for d in span if layout.events(d).exists()]
    build_previous = previous in days and not features_ready(layout, previous, args)
    # On a nightly run D-1's features exist, so the day before D's window is not read.
    read = days if build_previous else [d for d in days if d in window_dates(date, args.window_days)]
    events = spark.read.parquet(*[str(layout.events(d)) for d in read]).cache()
    catalog = spark.read.parquet(str(layout.catalog))

    rows = write_features(spark, layout, events, catalog, date, args)
    if build_previous:
        write_features(spark, layout, events, catalog, previous, args)
    events.unpersist()
    return {
        "lines_in": lines_in,
        "accepted": accepted_n,
        "quarantined": sum(counts.values()),
        "active_users": active_users,
        "quarantined_by_reason": dict(sorted(counts.items())),
        "window_days_found": [d for d in window_dates(date, args.window_days) if d in days],
        "days_validated": [*backfilled, date],
        "previous_day_features_built": build_previous,
        "feature_rows": rows,
        "output": str(layout.features(date, "")),
    }


def main(argv: list[str] | None = None) -> int:
    return run_job("features", build_parser(), run, argv)
