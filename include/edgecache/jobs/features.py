"""Spark job: validate day D's logs (quarantining bad lines) and build the feature tables.

Features are built for D and, when they are missing, for D-1: the predict step trains on
D-1's features against what viewers watched on D.

Each day's events, quarantine and features are committed as whole folders (see
``edgecache.layout.staging``): a day counts as validated, and its features as ready, only
once committed, so a killed run is redone rather than trusted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from edgecache.catalog import extend_inferred, is_inferred, read_catalog, read_spark, write_catalog
from edgecache.features import build_features
from edgecache.jobs.common import InputError, base_parser, positive_float, positive_int, run_job
from edgecache.layout import COMMIT_MARKER, Layout, committed, read_json, staging, write_json_atomic
from edgecache.settings import Settings
from edgecache.spark import in_parallel
from edgecache.validate import accepted, checked, counts, judged, quarantined, split_plain


def build_parser() -> argparse.ArgumentParser:
    d = Settings.from_env()
    p = base_parser("Validate the logs of the window and build the feature tables for day D (and D-1).")
    p.add_argument(
        "--window-days",
        type=positive_int,
        default=d.window_days,
        help=f"days of history, ending at --date, that the features cover (default {d.window_days})",
    )
    p.add_argument(
        "--decay-days",
        type=positive_float,
        default=d.decay_days,
        help=f"e-folding time of the popularity decay, in days (default {d.decay_days})",
    )
    return p


def window_dates(date: str, days: int) -> list[str]:
    end = dt.date.fromisoformat(date)
    return [(end - dt.timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]


def validate_day(spark: SparkSession, layout: Layout, date: str) -> dict[str, int]:
    """Split a day's log lines into events and quarantine; return the lines by outcome:
    ``accepted`` (distinct events), ``duplicate`` and each quarantine reason."""
    lines = spark.read.text(str(layout.logs(date))).select("value", F.col("_metadata.file_path").alias("source"))
    # Each line is checked once, into staging tables the three outputs then read: cheaper
    # than caching a day of 10 million rows in the JVM's heap. The lines in the seed's shape
    # are accepted in the JVM on the way in; only the others (few, as a rule) go to Python.
    stage = layout.root / ".staging" / f"validate-{date}"
    split_plain(lines, date).write.mode("overwrite").parquet(str(stage / "plain"))
    split = spark.read.parquet(str(stage / "plain"))
    judged(split, date).write.mode("overwrite").parquet(str(stage / "judged"))
    classified = checked(split, spark.read.parquet(str(stage / "judged")))
    with staging(layout.quarantine(date)) as tmp:
        quarantined(classified).write.mode("overwrite").json(str(tmp))
    by_outcome = counts(classified)
    # The events are committed last: their marker is what says the day was validated. The
    # checked lines go just before, so a kill leaves them only for a day validated again.
    with staging(layout.events(date)) as tmp:
        accepted(classified).write.mode("overwrite").parquet(str(tmp))
        shutil.rmtree(stage, ignore_errors=True)
    events = spark.read.parquet(str(layout.events(date))).count()
    by_outcome["duplicate"] = by_outcome.pop("accepted", 0) - events
    by_outcome["accepted"] = events
    return by_outcome


def manifest(cutoff: str, args: argparse.Namespace, days: list[str]) -> dict[str, Any]:
    return {"cutoff": cutoff, "window_days": args.window_days, "decay_days": args.decay_days, "days": days}


def write_features(
    spark: SparkSession, layout: Layout, events: DataFrame, catalog: DataFrame, cutoff: str, args: argparse.Namespace
) -> dict[str, int]:
    """Build every feature table for ``cutoff`` and commit them with their manifest as one
    folder (the day's old folder stays in place until then); return rows per table."""
    days = [d for d in window_dates(cutoff, args.window_days) if committed(layout.events(d))]
    with staging(layout.features_day(cutoff)) as tmp:

        def write(table: tuple[str, DataFrame]) -> tuple[str, int]:
            name, df = table
            df.write.mode("overwrite").parquet(str(tmp / name))
            return name, spark.read.parquet(str(tmp / name)).count()

        tables = build_features(events, catalog, cutoff, args.window_days, args.decay_days)
        rows = dict(in_parallel(write, tables.items()))
        write_json_atomic(tmp / "manifest.json", manifest(cutoff, args, days))
    return rows


def features_ready(layout: Layout, cutoff: str, args: argparse.Namespace) -> bool:
    """True when the day's features were committed with this window and decay."""
    if not committed(layout.features_day(cutoff)):
        return False
    m = read_json(layout.features(cutoff, "manifest.json"))
    return m["window_days"] == args.window_days and m["decay_days"] == args.decay_days


def check_day_logs(layout: Layout, date: str) -> None:
    """A day's logs are there, committed and not empty, or a one-line error that says what to run."""
    logs = layout.logs(date)
    files = [p for p in logs.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))] if logs.is_dir() else []
    if not files:
        raise InputError(
            f"no logs for {date} at {logs}: run `edgecache generate` or `edgecache ingest` for {date} first"
        )
    if not layout.has_logs(date):
        raise InputError(
            f"the logs for {date} at {logs} are incomplete (no {COMMIT_MARKER} marker: the "
            f"generate or ingest that wrote them did not finish): run it again for {date}"
        )
    if all(p.stat().st_size == 0 for p in files):
        raise InputError(f"the logs for {date} at {logs} are empty")


def check(args: argparse.Namespace) -> None:
    check_day_logs(Layout(args.data_dir.resolve()), args.date)


def infer_catalog_from(spark: SparkSession, layout: Layout, events: DataFrame) -> int | None:
    """With no catalog, or an inferred one, add the titles these events name; titles added."""
    if layout.catalog.exists() and not is_inferred(layout.catalog_info):
        return None
    longest = events.groupBy("content_id").agg(F.max("duration").alias("duration")).toPandas()
    old = read_catalog(layout.catalog) if layout.catalog.exists() else None
    catalog = extend_inferred(old, longest)
    write_catalog(catalog, layout.catalog)
    write_json_atomic(layout.catalog_info, {"source": "inferred", "titles": len(catalog)})
    return len(catalog) - (0 if old is None else len(old))


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.data_dir.resolve())
    date = args.date

    # The window of D and of D-1 (yesterday's features train today's model): validate any
    # day whose logs are committed but whose events are not (a first run, a backfill, or a
    # validation that was killed part-way), beside D itself. Each day commits on its own.
    previous = (dt.date.fromisoformat(date) - dt.timedelta(days=1)).isoformat()
    span = window_dates(date, args.window_days + 1)
    backfilled = [d for d in span[:-1] if not committed(layout.events(d)) and layout.has_logs(d)]
    outcome = in_parallel(lambda d: validate_day(spark, layout, d), [date, *backfilled])[0]
    active_users = spark.read.parquet(str(layout.events(date))).select("user_id").distinct().count()
    lines_in = sum(outcome.values())
    accepted_n = outcome.pop("accepted")
    duplicates = outcome.pop("duplicate")
    days = [d for d in span if committed(layout.events(d))]
    build_previous = previous in days and not features_ready(layout, previous, args)
    # On a nightly run D-1's features exist, so the day before D's window is not read.
    read = days if build_previous else [d for d in days if d in window_dates(date, args.window_days)]
    events = spark.read.parquet(*[str(layout.events(d)) for d in read]).cache()
    inferred = infer_catalog_from(spark, layout, events)
    catalog = read_spark(spark, layout.catalog)

    cutoffs = [date, previous] if build_previous else [date]
    rows = in_parallel(lambda c: write_features(spark, layout, events, catalog, c, args), cutoffs)[0]
    events.unpersist()
    return {
        "lines_in": lines_in,
        "accepted": accepted_n,
        "duplicates": duplicates,
        "quarantined": sum(outcome.values()),
        "active_users": active_users,
        "quarantined_by_reason": dict(sorted(outcome.items())),
        "window_days_found": [d for d in window_dates(date, args.window_days) if d in days],
        "days_validated": [*backfilled, date],
        "previous_day_features_built": build_previous,
        "catalog_titles_inferred": inferred,
        "feature_rows": rows,
        "output": str(layout.features(date, "")),
    }


def main(argv: list[str] | None = None) -> int:
    return run_job("features", build_parser(), run, argv, check=check)
