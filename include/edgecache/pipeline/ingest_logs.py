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
with the same files. The catalog is checked before any Spark work (``edgecache.pipeline.catalog``);
with none given and none there, the features job infers one from the logs.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from edgecache.layout import Layout, discard, staging, write_json_atomic
from edgecache.pipeline.catalog import load_catalog, write_catalog
from edgecache.pipeline.job import InputError, base_parser, run_job
from edgecache.schema import ID_PATTERN, ID_RE

SKIPPED_PREFIXES = (".", "_")  # hidden files, _SUCCESS and other markers of a writer
NO_EDGE = "__HIVE_DEFAULT_PARTITION__"  # Spark's folder for a null partition value: no edge


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(
        "Copy your own viewing logs for day D (JSON Lines, plain or gzip) and your catalog into the data directory."
    )
    p.add_argument(
        "--source",
        required=True,
        help="folder or glob of log files; {date} stands for D; a date=D folder under it is used when there is one",
    )
    p.add_argument("--edge", default=None, help="edge id of records that have none and sit in no edge=E folder")
    p.add_argument(
        "--catalog",
        default=None,
        help="catalog file (CSV or Parquet; only content_id is required). Without one, the catalog "
        "already in the data directory is kept, or one is inferred from the logs",
    )
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
        files += [
            p
            for p in candidates
            if not any(part.startswith(SKIPPED_PREFIXES) for part in p.relative_to(root.parent).parts)
        ]
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


GZIP_MAGIC = b"\x1f\x8b"


def copy_lines(src: Path, dst: Path) -> int:
    """Copy one log file as it is (gunzipped if it is gzip) and return its lines; a last
    line without a line break gets one."""
    with open(src, "rb") as probe:
        gz = probe.read(2) == GZIP_MAGIC
    lines, last = 0, b"\n"
    try:
        with gzip.open(src, "rb") if gz else open(src, "rb") as fin, open(dst, "wb") as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
            if last != b"\n":
                fout.write(b"\n")
                lines += 1
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InputError(f"log file {src} is not valid gzip ({exc})") from None
    return lines


def route_by_record(spark: SparkSession, files: list[Path], staging: Path) -> dict[Path, str | None]:
    """Files whose lines name no edge by folder or flag: Spark sends each line to its
    record's edge_id (lines without a valid one to no edge). The part files written, by edge."""
    record = F.get_json_object(F.expr("regexp_replace(value, '^\\uFEFF', '')"), "$.edge_id")
    route = F.when(record.rlike(ID_PATTERN), record)
    spark.read.text([str(f) for f in files]).select(route.alias("edge"), "value").write.partitionBy("edge").option(
        "compression", "none"
    ).text(str(staging))
    out: dict[Path, str | None] = {}
    for part in sorted(staging.glob("edge=*/part-*")):
        edge = part.parent.name.removeprefix("edge=")
        out[part] = None if edge == NO_EDGE else edge
    return out


def copy_day(tmp: Path, by_edge: dict[str | None, list[Path]], routed: dict[Path, str | None]) -> dict[str, int]:
    """Copy a day's files into ``tmp/edge=E/``, those of known edges first; return lines per edge."""
    jobs = []
    for edge, sources in sorted(by_edge.items()):
        jobs += [(src, tmp / f"edge={edge}" / f"part-{i:05d}.jsonl") for i, src in enumerate(sorted(sources))]
    for i, (part, edge) in enumerate(routed.items()):  # after the copied files of the same edge
        jobs.append((part, tmp / f"edge={edge if edge is not None else NO_EDGE}" / f"part-r{i:05d}.jsonl"))
    for _, dst in jobs:
        dst.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # gzip and file I/O free the GIL
        counts = list(pool.map(lambda job: copy_lines(*job), jobs))
    per_edge: dict[str, int] = {}
    for (_, dst), n in zip(jobs, counts):
        edge = dst.parent.name.removeprefix("edge=")
        edge = "(no edge)" if edge == NO_EDGE else edge
        per_edge[edge] = per_edge.get(edge, 0) + n
    return per_edge


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.data_dir.resolve())
    date, files = args.date, args.files
    target = layout.logs(date)
    # Files whose edge is known (an edge=E folder or --edge) are copied as they are; only
    # the others go through Spark, which reads each line's edge_id.
    by_edge: dict[str | None, list[Path]] = {}
    for f in files:
        by_edge.setdefault(folder_edge(f) or args.edge, []).append(f)
    route = layout.root / ".staging" / f"route-{date}"
    shutil.rmtree(route, ignore_errors=True)
    routed = route_by_record(spark, by_edge.pop(None), route) if None in by_edge else {}
    with staging(target) as tmp:  # the new day replaces the old one whole
        per_edge = copy_day(tmp, by_edge, routed)
        # The day's validated events (if any) will not match the new logs. They go before
        # the logs are swapped in, so no kill leaves new logs beside events that look validated.
        discard(layout.events(date))
    shutil.rmtree(route, ignore_errors=True)

    catalog = None
    if getattr(args, "catalog_frame", None) is not None:
        write_catalog(args.catalog_frame, layout.catalog)
        catalog = {"source": str(Path(args.catalog).resolve()), "titles": len(args.catalog_frame)}
    elif not layout.catalog.exists():
        catalog = {"source": "inferred"}
    if catalog is not None:
        write_json_atomic(layout.catalog_info, catalog)
    return {
        "files": len(files),
        "lines": sum(per_edge.values()),
        "lines_per_edge": dict(sorted(per_edge.items())),
        "catalog": catalog,
        "output": str(target),
    }


def main(argv: list[str] | None = None) -> int:
    return run_job("ingest", build_parser(), run, argv, check=check)
