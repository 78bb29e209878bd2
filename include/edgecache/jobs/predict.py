"""Spark job: predict each viewer's next titles and each edge's prefetch set for day D+1."""

from __future__ import annotations

import argparse
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from edgecache.jobs.common import base_parser, positive_int, run_job
from edgecache.layout import Layout, write_json_atomic
from edgecache.predict import edge_demand, predict_users, prefetch
from edgecache.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    d = Settings.from_env()
    p = base_parser("Predict next titles per viewer and the prefetch set per edge.")
    p.add_argument("--top-k", type=positive_int, default=d.top_k, help=f"titles per viewer (default {d.top_k})")
    p.add_argument(
        "--cache-capacity", type=positive_int, default=d.cache_capacity,
        help=f"titles per edge cache (default {d.cache_capacity})",
    )
    return p


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.data_dir.resolve())
    date = args.date
    feats = {n: spark.read.parquet(str(layout.features(date, n))) for n in ("users", "transitions", "popularity")}
    catalog = spark.read.parquet(str(layout.catalog))

    users = predict_users(feats["users"], feats["transitions"], feats["popularity"], catalog, args.top_k)
    users.write.mode("overwrite").parquet(str(layout.predictions(date, "users")))
    edge_demand(feats["popularity"]).write.mode("overwrite").parquet(str(layout.predictions(date, "edge_demand")))
    prefetch(feats["popularity"], args.cache_capacity).write.mode("overwrite").parquet(
        str(layout.predictions(date, "prefetch"))
    )

    written = spark.read.parquet(str(layout.predictions(date, "users")))
    by_source = {r["source"]: r["n"] for r in written.groupBy("source").agg(F.count("*").alias("n")).collect()}
    pf = spark.read.parquet(str(layout.predictions(date, "prefetch")))
    per_edge = {r["edge_id"]: r["n"] for r in pf.groupBy("edge_id").agg(F.count("*").alias("n")).collect()}
    summary = {
        "date": date,
        "predictions": sum(by_source.values()),
        "predictions_by_source": dict(sorted(by_source.items())),
        "prefetch_titles_per_edge": dict(sorted(per_edge.items())),
        "top_k": args.top_k,
        "cache_capacity": args.cache_capacity,
    }
    write_json_atomic(layout.predictions(date, "summary.json"), summary)
    return {**summary, "output": str(layout.predictions(date, ""))}


def main(argv: list[str] | None = None) -> int:
    return run_job("predict", build_parser(), run, argv)
