"""Spark job: copy an operator's own viewing logs for day D into the layout, and their catalog.

    edgecache ingest --date 2025-04-12 --source /mnt/logs --catalog /mnt/catalog.csv

``--source`` is a folder or a glob; ``{date}`` in it stands for D. A folder that holds a
``date=D`` folder gives that folder's files, else all its files belong to D. Files are
JSON Lines in the seed's record format, plain or gzip (``.gz``), with LF or CRLF endings
and an optional BOM. A line's edge is its record's ``edge_id``; for records without one,
the ``edge=E`` folder the file sits in, else ``--edge``.

Lines are copied as they are, into ``logs/date=D/edge=E/``; nothing is judged here. The
features job validates them (quarantine with reasons, duplicates dropped and counted), so
ingested and generated days go through the same contract. Re-ingesting a day replaces it
with the same files. The catalog is checked before any Spark work (``edgecache.catalog``);
with none given and none there, the features job infers one from the logs.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from edgecache.catalog import load_catalog, write_catalog
from edgecache.jobs.common import InputError, base_parser, run_job
from edgecache.jobs.generate import stable_part_names
from edgecache.layout import Layout, write_json_atomic
from edgecache.schema import ID_PATTERN, ID_RE

SKIPPED_PREFIXES = (".", "_")  # hidden files, _SUCCESS and other markers of a writer


def build_parser() -> argparse.ArgumentParser:
    p = base_parser("Copy your own viewing logs for day D (JSON Lines, plain or gzip) and your catalog "
                    "into the data directory.")
    p.add_argument("--source", required=True,
                   help="folder or glob of log files; {date} stands for D; a date=D folder under it is used "
                        "when there is one")
    p.add_argument("--edge", default=None, help="edge id of records that have none and sit in no edge=E folder")
    p.add_argument("--catalog", default=None,
                   help="catalog file (CSV or Parquet; only content_id is required). Without one, the catalog "
                        "already in the data directory is kept, or one is inferred from the logs")
    return p


def source_files(source: str, date: str) -> list[Path]:
    """The log files of day ``date`` under ``source`` (a folder or a glob), sorted."""
    pattern = source.replace("{date}", date)
    if any(ch in pattern for ch in "*?["):
        roots = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
    else:
        root = Path(pattern)
        if not root.exists():
            raise InputError(f"log source {pattern} does not exist")
        roots = [root / f"date={date}"] if (root / f"date={date}").is_dir() else [root]
    files = []
    for root in roots:
        candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        files += [p for p in candidates
                  if not any(part.startswith(SKIPPED_PREFIXES) for part in p.relative_to(root.parent).parts)]
    return sorted(set(files))


def folder_edge(path: Path) -> str | None:
    """The E of the nearest ``edge=E`` folder above ``path``."""
    for part in reversed(path.parent.parts):
        if part.startswith("edge="):
            return part.removeprefix("edge=")
    return None


def check(args: argparse.Namespace) -> None:
    """Everything that can be checked without Spark: the catalog, the files, the edge flag."""
    if not args.source.strip():
        raise InputError("no log source given: set --source (the DAG's logs_path param, or EDGECACHE_LOGS_PATH)")
    args.catalog = args.catalog or None  # the DAG passes an empty catalog_path as ""
    args.edge = args.edge or None
    if args.edge is not None and not ID_RE.fullmatch(args.edge):
        raise InputError(f"--edge {args.edge!r} is not 1-64 letters, digits, '_' or '-'")
    if args.catalog is not None:
        args.catalog_frame = load_catalog(args.catalog)
    files = source_files(args.source, args.date)
    if not files:
        raise InputError(f"no log files for {args.date} under {args.source}")
    for f in files:
        if not os.access(f, os.R_OK):
            raise InputError(f"log file {f} is not readable")
    if all(f.stat().st_size == 0 for f in files):
        raise InputError(f"the log files for {args.date} under {args.source} are all empty")
    args.files = files


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.data_dir.resolve())
    date, files = args.date, args.files
    edges = {str(f.resolve()): folder_edge(f) or args.edge for f in files}
    known = {path: edge for path, edge in edges.items() if edge is not None}
    lines = spark.read.text([str(f) for f in files]).select(
        "value", F.expr("try_url_decode(replace(regexp_replace(_metadata.file_path, '^file:(//)?', ''), '+', '%2B'))").alias("path"))
    by_file = F.lit(None).cast("string")
    for path, edge in known.items():
        by_file = F.when(F.col("path") == path, edge).otherwise(by_file)
    if len(known) < len(edges):  # some files name no edge: route by the record's own
        record = F.get_json_object(F.expr("regexp_replace(value, '^\\uFEFF', '')"), "$.edge_id")
        route = F.coalesce(F.when(record.rlike(ID_PATTERN), record), by_file)
    else:
        route = by_file
    # A new day goes into a folder beside the old one and replaces it whole.
    target = layout.logs(date)
    tmp = layout.root / ".staging" / f"ingest-{date}"  # Spark skips a root whose name starts with "."
    shutil.rmtree(tmp, ignore_errors=True)
    lines.select(route.alias("edge"), "value").write.partitionBy("edge").option("compression", "none").text(str(tmp))
    stable_part_names(spark, str(tmp), ".jsonl")
    old = tmp.with_name(f"old-{date}")
    shutil.rmtree(old, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    per_edge = {r["edge"]: r["lines"] for r in spark.read.text(str(target)).groupBy("edge")
                .agg(F.count("*").alias("lines")).collect()}
    # The day's validated events (if any) no longer match its logs.
    shutil.rmtree(layout.events(date), ignore_errors=True)

    catalog = None
    if getattr(args, "catalog_frame", None) is not None:
        write_catalog(args.catalog_frame, layout.catalog)
        write_json_atomic(layout.catalog_info, {"source": str(Path(args.catalog).resolve()),
                                                "titles": len(args.catalog_frame)})
        catalog = {"source": str(Path(args.catalog).resolve()), "titles": len(args.catalog_frame)}
    elif not layout.catalog.exists():
        write_json_atomic(layout.catalog_info, {"source": "inferred"})
        catalog = {"source": "inferred"}
    return {
        "files": len(files),
        "lines": sum(per_edge.values()),
        "lines_per_edge": {("(no edge)" if e is None else e): n for e, n in sorted(per_edge.items(), key=str)},
        "catalog": catalog,
        "output": str(target),
    }


def main(argv: list[str] | None = None) -> int:
    return run_job("ingest", build_parser(), run, argv, check=check)
