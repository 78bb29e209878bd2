"""Spark job: generate one day of viewing logs per edge (plus the catalog and viewers once,
and the days before it that the feature window needs, when they are missing)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, fields
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from edgecache.layout import Layout, read_json, staging, write_json_atomic
from edgecache.pipeline.features import window_dates
from edgecache.pipeline.filesystems import stable_part_names
from edgecache.pipeline.job import base_parser, positive_int, run_job
from edgecache.settings import WORKLOAD_CHOICES, WORKLOAD_HELP, Settings, WorkloadParams
from edgecache.simulate.workload import (
    LOG_DDL,
    Workload,
    build_workload,
    for_workers,
    generate_chunk,
    manifest,
    n_chunks,
)

CHUNKS_PER_TASK = 16


def build_parser() -> argparse.ArgumentParser:
    d = WorkloadParams.from_env()
    p = base_parser("Generate one day of synthetic viewing logs, JSON Lines per edge.")
    window = Settings.from_env().window_days
    p.add_argument(
        "--history-days",
        type=positive_int,
        default=window + 1,
        help=f"also generate the days before --date, up to this many days in all, where missing "
        f"(default {window + 1}: the feature window and the training day before it)",
    )
    for f in fields(WorkloadParams):
        default = getattr(d, f.name)
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=type(default),
            default=default,
            choices=WORKLOAD_CHOICES.get(f.name),
            help=f"{WORKLOAD_HELP[f.name]} (default {default}; env EDGECACHE_{f.name.upper()})",
        )
    return p


def params_from_args(args: argparse.Namespace) -> WorkloadParams:
    return WorkloadParams(**{f.name: getattr(args, f.name) for f in fields(WorkloadParams)})


def write_reference(wl: Workload, layout: Layout) -> bool:
    """Write catalog and viewers unless the same workload is already there. True if written."""
    manifest_path = layout.reference / "manifest.json"
    wanted = manifest(wl.params)
    if manifest_path.exists() and read_json(manifest_path) == wanted:
        return False
    # Swapped in whole; its manifest says which workload it holds, so it needs no marker.
    assert wl.catalog is not None and wl.users is not None, "the driver's workload has its tables"
    with staging(layout.reference, mark=False) as tmp:
        wl.catalog.to_parquet(tmp / "catalog.parquet", index=False)
        wl.users.to_parquet(tmp / "users.parquet", index=False)
        write_json_atomic(tmp / "manifest.json", wanted)
    return True


def write_day(spark: SparkSession, wl_b: Any, chunks: int, layout: Layout, date: str) -> dict[str, int]:
    """Generate one day of logs and commit them as a whole; return lines per edge."""

    def chunks_to_logs(batches):
        wl_local = wl_b.value
        for batch in batches:
            for chunk in batch.column(0).to_pylist():
                yield generate_chunk(wl_local, date, chunk)  # already in time order

    # A task takes CHUNKS_PER_TASK consecutive chunks (a task costs far more than a chunk)
    # and, with one edge per chunk, writes one file per edge it touches, with no shuffle.
    # Files and contents depend only on (seed, date), never on the machine's parallelism.
    tasks = -(-chunks // CHUNKS_PER_TASK)
    logs = spark.range(chunks, numPartitions=tasks).mapInArrow(chunks_to_logs, LOG_DDL)
    with staging(layout.logs(date)) as tmp:
        logs.select(F.col("edge_id").alias("edge"), "value").write.mode("overwrite").partitionBy("edge").option(
            "compression", "none"
        ).text(str(tmp))
        # Quarantine records name the file a bad line came from, so the names must not change
        # from one run of the same day to the next.
        stable_part_names(str(tmp), ".jsonl")
    # Counted from the files themselves: cheaper than keeping 10 million lines cached.
    written = spark.read.text(str(layout.logs(date)))
    return {r["edge"]: r["lines"] for r in written.groupBy("edge").agg(F.count("*").alias("lines")).collect()}


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.data_dir.resolve())
    params = params_from_args(args)
    wl = build_workload(params)
    reference_written = write_reference(wl, layout)
    chunks = n_chunks(wl)
    wl_b = spark.sparkContext.broadcast(for_workers(wl))
    del wl  # the catalog and viewer tables are on disk now; keep the driver small
    date = args.date
    # The service has been running before D: earlier days the window needs are generated
    # once, when missing (a re-run of D never rewrites them).
    # the days before D, oldest first
    backfilled = [d for d in window_dates(date, args.history_days)[:-1] if not layout.has_logs(d)]
    for d in backfilled:
        write_day(spark, wl_b, chunks, layout, d)
    per_edge = write_day(spark, wl_b, chunks, layout, date)
    return {
        "lines": sum(per_edge.values()),
        "lines_per_edge": dict(sorted(per_edge.items())),
        "history_days_generated": backfilled,
        "users": params.users,
        "edges": params.edges,
        "titles": params.titles,
        "reference_written": reference_written,
        "workload": asdict(params),
        "output": str(layout.logs(date)),
    }


def main(argv: list[str] | None = None) -> int:
    return run_job("generate", build_parser(), run, argv)
