"""Argument and report helpers shared by the Spark jobs."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from edgecache.layout import Layout, write_json_atomic
from edgecache.pipeline.catalog import CatalogError
from edgecache.pipeline.java import JavaNotFoundError
from edgecache.settings import Settings


def iso_date(value: str) -> str:
    """argparse type: a calendar date as YYYY-MM-DD."""
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from exc


def positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def non_negative_int(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {n}")
    return n


def non_negative_float(value: str) -> float:
    x = float(value)
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return x


def boolean(value: str) -> bool:
    """argparse type: true/false (also 1/0, yes/no; Airflow renders a boolean param as True/False)."""
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean (true/false): {value!r}")


def positive_float(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return x


def base_parser(description: str) -> argparse.ArgumentParser:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--date", type=iso_date, required=True, help="logical day D, YYYY-MM-DD")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=settings.data_dir,
        help="root of inputs and outputs (default: $EDGECACHE_DATA_DIR or ./data)",
    )
    parser.add_argument(
        "--master",
        default=settings.spark_master,
        help="Spark master when run outside spark-submit (default: $SPARK_MASTER or local[*])",
    )
    return parser


class InputError(Exception):
    """An input a person can fix (a missing day, an empty file, a wrong path): one line, exit 2."""


def run_job(
    name: str,
    parser: argparse.ArgumentParser,
    run: Callable[[SparkSession, argparse.Namespace], dict[str, Any]],
    argv: list[str] | None,
    check: Callable[[argparse.Namespace], None] | None = None,
) -> int:
    """Parse ``argv``, check the inputs (``check``, before any Spark work), run the job on a
    SparkSession, write and print its report. A wrong input is one line on stderr and exit 2."""
    from edgecache.pipeline.spark import drop_checkpoints, get_spark

    args = parser.parse_args(argv)
    try:
        if check is not None:
            check(args)
        spark = get_spark(f"edgecache-{name}", args.master)
        started = time.perf_counter()
        try:
            report = run(spark, args)
        finally:
            drop_checkpoints(spark)
    except (JavaNotFoundError, InputError, CatalogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["stage"] = name
    report["date"] = args.date
    report["wall_seconds"] = round(time.perf_counter() - started, 3)
    write_json_atomic(Layout(args.data_dir.resolve()).report(args.date, name), report)
    print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in sorted(report.items()) if not isinstance(v, dict)))
    return 0


class Laps:
    """Wall seconds of a job's steps, each step timed from the end of the one before."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._clock, 2)
        self._clock = now
