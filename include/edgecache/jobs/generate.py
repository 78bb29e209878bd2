"""Spark job: generate one day of viewing logs per edge (plus the catalog and viewers once)."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from edgecache.jobs.common import base_parser, positive_int, run_job
from edgecache.layout import Layout, read_json, write_json_atomic
from edgecache.settings import WorkloadParams
from edgecache.workload import Workload, build_workload, generate_chunk, manifest, n_chunks


def build_parser() -> argparse.ArgumentParser:
    d = WorkloadParams.from_env()
    p = base_parser("Generate one day of synthetic viewing logs, JSON Lines per edge.")
    p.add_argument("--users", type=positive_int, default=d.users, help=f"viewers (default {d.users})")
    p.add_argument("--edges", type=positive_int, default=d.edges, help=f"edge sites (default {d.edges})")
    p.add_argument("--titles", type=positive_int, default=d.titles, help=f"catalog size (default {d.titles})")
    p.add_argument("--events", type=int, default=d.events, help=f"expected views per day (default {d.events})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--alpha", type=float, default=d.alpha, help=f"Zipf exponent of popularity (default {d.alpha})")
    p.add_argument(
        "--binge-prob", type=float, default=d.binge_prob,
        help=f"chance the next view is the next episode (default {d.binge_prob})",
    )
    p.add_argument(
        "--bad-rate", type=float, default=d.bad_rate,
        help=f"share of malformed lines, to exercise the quarantine (default {d.bad_rate})",
    )
    return p


def params_from_args(args: argparse.Namespace) -> WorkloadParams:
    return WorkloadParams(
        users=args.users, edges=args.edges, titles=args.titles, events=args.events,
        seed=args.seed, alpha=args.alpha, binge_prob=args.binge_prob, bad_rate=args.bad_rate,
    )


def write_reference(wl: Workload, layout: Layout) -> bool:
    """Write catalog and viewers unless the same workload is already there. True if written."""
    manifest_path = layout.reference / "manifest.json"
    wanted = manifest(wl.params)
    if manifest_path.exists() and read_json(manifest_path) == wanted:
        return False
    tmp = layout.reference.with_name(".reference.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    wl.catalog.to_parquet(tmp / "catalog.parquet", index=False)
    wl.users.to_parquet(tmp / "users.parquet", index=False)
    write_json_atomic(tmp / "manifest.json", wanted)
    shutil.rmtree(layout.reference, ignore_errors=True)
    tmp.rename(layout.reference)
    return True


def stable_part_names(spark: SparkSession, root: str, suffix: str) -> None:
    """Rename Spark's part files (named with a random id) to part-00000<suffix>, ... per folder.

    Quarantine records name the file a bad line came from, so the names must not change
    from one run of the same day to the next. Uses Hadoop's FileSystem API, so it works on
    any file system Spark writes to.
    """
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(root)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    parts: dict[str, list] = {}
    files = fs.listFiles(path, True)
    while files.hasNext():
        p = files.next().getPath()
        if p.getName().startswith("part-"):
            parts.setdefault(p.getParent().toString(), []).append(p)
    for folder, paths in parts.items():
        for i, p in enumerate(sorted(paths, key=lambda q: q.getName())):
            target = jvm.org.apache.hadoop.fs.Path(p.getParent(), f"part-{i:05d}{suffix}")
            if not fs.rename(p, target):
                raise OSError(f"could not rename {p.toString()} to {target.toString()}")


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.data_dir.resolve())
    params = params_from_args(args)
    wl = build_workload(params)
    reference_written = write_reference(wl, layout)

    wl_b = spark.sparkContext.broadcast(wl)
    date = args.date
    chunks = n_chunks(params)
    rows = spark.sparkContext.parallelize(range(chunks), min(chunks, 64)).flatMap(
        lambda c: generate_chunk(wl_b.value, date, c)
    )
    df = spark.createDataFrame(rows, "edge string, user_id string, seq int, value string")
    # One task per edge, rows in a fixed order: the files' contents depend only on (seed, date).
    out = (
        df.repartition(params.edges, "edge")
        .sortWithinPartitions("edge", "user_id", "seq")
        .select("edge", "value")
        .cache()
    )
    out.write.mode("overwrite").partitionBy("edge").option("compression", "none").text(
        str(layout.logs(date))
    )
    stable_part_names(spark, str(layout.logs(date)), ".jsonl")
    per_edge = {r["edge"]: r["lines"] for r in out.groupBy("edge").agg(F.count("*").alias("lines")).collect()}
    active_users = out.select(F.get_json_object("value", "$.user_id")).distinct().count()
    out.unpersist()
    return {
        "lines": sum(per_edge.values()),
        "lines_per_edge": dict(sorted(per_edge.items())),
        "active_users": active_users,
        "users": params.users,
        "edges": params.edges,
        "titles": params.titles,
        "reference_written": reference_written,
        "workload": asdict(params),
        "output": str(layout.logs(date)),
    }


def main(argv: list[str] | None = None) -> int:
    return run_job("generate", build_parser(), run, argv)
