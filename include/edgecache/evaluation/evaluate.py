"""Spark job: replay day D+1's requests against day D's predictions and classic cache policies.

Spark reads and validates D+1's logs (made by the task ``next_day_logs`` with D's workload,
or ingested); the replay runs in the driver on numpy arrays and libCacheSim (see
``edgecache.evaluation.report``). Writes ``evaluation/date=D/`` and prints the hit-ratio tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from edgecache.evaluation.policies import default_workers
from edgecache.evaluation.report import SIZES_PCT, evaluate, to_markdown, write_outputs
from edgecache.layout import Layout, committed, read_json, staging
from edgecache.pipeline.catalog import extend_inferred, is_inferred, read_catalog, write_catalog
from edgecache.pipeline.job import InputError, base_parser, positive_int, run_job
from edgecache.pipeline.validate import classify
from edgecache.simulate.next_day_logs import next_day


def size_list(value: str) -> list[int]:
    """argparse type: cache sizes in percent of the catalog, e.g. ``1,2,5``."""
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of whole percentages: {value!r}") from exc
    if not sizes or any(not 0 < s <= 100 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be within 1..100 percent, got {value!r}")
    return sorted(set(sizes))


def build_parser() -> argparse.ArgumentParser:
    p = base_parser("Replay day D+1's requests against D's predictions and classic cache policies.")
    p.add_argument(
        "--sizes",
        type=size_list,
        default=list(SIZES_PCT),
        help="cache sizes in percent of the catalog's titles and bytes (default 1,2,5,10,20)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=default_workers(),
        help="processes for the libCacheSim replays (default: the CPUs this process may use)",
    )
    return p


def read_parquet(spark: SparkSession, path: Any, columns: list[str] | None = None) -> pa.Table:
    """A Parquet folder read through Spark (any file system Spark reaches), as Arrow."""
    df = spark.read.parquet(str(path))
    return (df.select(*columns) if columns else df).toArrow()


def validated_events(spark: SparkSession, layout: Layout, date: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """D's accepted requests (edge_id, user_id, content_id, ts in seconds) and the line counts.

    One pass over the logs, straight to Arrow in the driver (the replay runs there on the
    whole day anyway). Exact duplicate records count once, as in the features job.
    """
    lines = spark.read.text(str(layout.logs(date))).select("value", F.col("_metadata.file_path").alias("source"))
    table = (
        classify(lines, date)
        .select(
            "reason",
            "edge_id",
            "user_id",
            "content_id",
            "device",
            "duration",
            F.to_timestamp("timestamp", "yyyy-MM-dd HH:mm:ss").cast("long").alias("ts"),
        )
        .toArrow()
    )
    reasons = table.column("reason")
    counts = {r["values"]: r["counts"] for r in pc.value_counts(reasons.drop_null()).to_pylist()}
    records = table.filter(pc.is_null(reasons)).drop_columns(["reason"]).to_pandas()
    events = records.drop_duplicates().drop(columns=["device"]).reset_index(drop=True)
    return events, {
        "lines_in": table.num_rows,
        "accepted": len(events),
        "duplicates": len(records) - len(events),
        "quarantined": table.num_rows - len(records),
        "quarantined_by_reason": dict(sorted(counts.items())),
    }


def edge_ages(layout: Layout, date: str) -> dict[str, int]:
    """Each edge's age on ``date``: days from its first day of logs to ``date``, both counted
    (1 on the day an edge opens). Read from the committed days' ``edge=E`` folders."""
    first: dict[str, str] = {}
    for day in sorted((layout.root / "logs").glob("date=*")):
        d = day.name.removeprefix("date=")
        if d > date or not committed(day):
            continue
        for edge in day.glob("edge=*"):
            first.setdefault(edge.name.removeprefix("edge="), d)
    end = dt.date.fromisoformat(date)
    return {e: (end - dt.date.fromisoformat(d)).days + 1 for e, d in sorted(first.items())}


def check(args: argparse.Namespace) -> None:
    layout = Layout(args.data_dir.resolve())
    for path in (layout.predictions(args.date, "edge_demand"), layout.predictions(args.date, "users"), layout.catalog):
        if not path.exists():
            raise InputError(f"{path} is missing: run features and predict for {args.date} first")
    if not committed(layout.predictions_day(args.date)):
        raise InputError(
            f"the predictions for {args.date} at {layout.predictions_day(args.date)} are incomplete "
            f"(a predict that did not finish): run predict for {args.date} again"
        )


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.data_dir.resolve())
    date, replayed = args.date, next_day(args.date)
    demand_path, users_path = layout.predictions(date, "edge_demand"), layout.predictions(date, "users")
    if not layout.has_logs(replayed):
        # An operator's own logs: D+1 is not in yet. Nothing to replay, and nothing wrong.
        print(
            f"evaluate: no logs for {replayed} yet (ingest them, or run next_day_logs for {date}), "
            f"then run evaluate for {date}"
        )
        return {"replayed_date": replayed, "skipped": f"no logs for {replayed} yet"}

    clock = time.perf_counter()
    events, validation = validated_events(spark, layout, replayed)
    validate_seconds = time.perf_counter() - clock
    catalog = read_catalog(layout.catalog)
    if is_inferred(layout.catalog_info):  # the titles first seen on D+1 join the inferred catalog
        longest = events.groupby("content_id", as_index=False)["duration"].max()
        catalog = extend_inferred(catalog, longest)
        write_catalog(catalog, layout.catalog)
    events = events.drop(columns=["duration"])
    demand = read_parquet(spark, demand_path).to_pandas()
    users = read_parquet(spark, users_path, ["user_id", "edge_id", "ranked"]).to_pandas()
    popularity_path = layout.features(date, "popularity")
    popularity = (
        read_parquet(
            spark, popularity_path, ["edge_id", "content_id", "requests", "rank", "requests_decayed"]
        ).to_pandas()
        if committed(layout.features_day(date))
        else None
    )

    prefetch_path, summary_path = layout.predictions(date, "prefetch"), layout.predictions(date, "summary.json")
    prefetch = (
        read_parquet(spark, prefetch_path, ["edge_id", "content_id"]).to_pandas() if prefetch_path.exists() else None
    )
    cache_bytes = read_json(summary_path).get("cache_bytes") if summary_path.exists() else None
    report, traces = evaluate(
        events,
        catalog,
        demand,
        users,
        args.sizes,
        args.workers,
        popularity=popularity,
        prefetch=prefetch,
        cache_bytes=cache_bytes,
    )
    report = {"date": date, "replayed_date": replayed, "validation": validation, **report}
    ages = edge_ages(layout, date)
    for edge, figures in report["edges"].items():
        figures["age_days"] = ages.get(edge, 0)  # 0: an edge with no logs up to D
    report["seconds"] = {"validate": round(validate_seconds, 2), **report["seconds"]}
    clock = time.perf_counter()
    out = layout.evaluation(date)
    # No stage reads the evaluation back, so it needs no marker; it is swapped in whole.
    with staging(out, mark=False) as tmp:
        write_outputs(report, traces, tmp)
    outputs_seconds = time.perf_counter() - clock
    print(to_markdown(report))

    headline = report["results"]["titles"]
    mid = str(args.sizes[len(args.sizes) // 2])
    return {
        "replayed_date": replayed,
        **validation,
        "requests_replayed": report["requests_replayed"],
        "edges": len(report["edges"]),
        f"object_hit_ratio_at_{mid}pct": {
            name: (None if by_pct[mid] is None else round(by_pct[mid]["object_hit_ratio"], 4))
            for name, by_pct in headline.items()
        },
        "deployed_object_hit_ratio": (
            {n: round(e["object_hit_ratio"], 4) for n, e in report["deployed"]["policies"].items()}
            if "deployed" in report
            else None
        ),
        "users": report["users"],
        "users_baseline": report.get("users_baseline"),
        "seconds": {**report["seconds"], "outputs": round(outputs_seconds, 2)},
        "output": str(out),
    }


def main(argv: list[str] | None = None) -> int:
    return run_job("evaluate", build_parser(), run, argv, check=check)
