"""SparkSession set-up shared by the jobs, the CLI and the tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from edgecache.pipeline.filesystems import remove_tree
from edgecache.pipeline.java import require_java
from edgecache.settings import Settings

T = TypeVar("T")
R = TypeVar("R")

# Defaults for a small embedded run; spark-submit --conf or the Spark connection override them.
DEFAULT_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.showConsoleProgress": "false",
    # checkpoint files go when nothing refers to them any more (the job removes the rest)
    "spark.cleaner.referenceTracking.cleanCheckpoints": "true",
}


def get_spark(app_name: str, master: str | None = None) -> SparkSession:
    """Return the active SparkSession, creating one with the project's defaults if needed.

    Under spark-submit the master and conf come from the submission; ``master`` is only
    used when this process starts Spark itself (the CLI and the tests).
    """
    require_java()
    # Python workers must import edgecache too: by default they run this interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # Start (or, under spark-submit, attach to) the JVM first, so SparkConf() can see
    # the submission's settings and the defaults below never override them.
    SparkContext._ensure_initialized()
    submitted = SparkConf()
    builder = SparkSession.builder.appName(app_name)
    if master and not submitted.contains("spark.master"):
        builder = builder.master(master)
    # Reliable checkpoints (``materialize``), in a folder every executor reaches: the
    # submission's spark.checkpoint.dir, else $EDGECACHE_CHECKPOINT_DIR, else .local's.
    defaults = {**DEFAULT_CONF, "spark.checkpoint.dir": Settings.from_env().spark_checkpoint_dir()}
    for key, value in defaults.items():
        if not submitted.contains(key):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    ship_package(spark)
    return spark


def ship_package(spark: SparkSession) -> Path | None:
    """On a cluster master, send the package to the executors (``addPyFile``); in local
    mode the executors are this machine's Python, which has it already."""
    if (spark.sparkContext.master or "").startswith("local"):
        return None
    import tempfile

    from edgecache.pipeline.packaging import package_zip

    path = package_zip(Path(tempfile.mkdtemp(prefix="edgecache-pyfiles-")))
    spark.sparkContext.addPyFile(str(path))
    return path


def drop_checkpoints(spark: SparkSession) -> None:
    """Remove this SparkContext's checkpoint folder (a job's checkpoints end with it)."""
    folder = spark.sparkContext.getCheckpointDir()
    if folder:
        remove_tree(folder)


# Jobs Spark runs at once from the driver's threads. Small jobs are mostly fixed costs
# (planning, scheduling, starting tasks): run side by side they overlap, and the cores that
# one small job leaves idle do another's tasks.
JOB_THREADS = 4


def in_parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]``, up to JOB_THREADS at a time on the same SparkSession; the
    first error is raised once every call has ended."""
    with ThreadPoolExecutor(max_workers=JOB_THREADS) as pool:
        return list(pool.map(fn, items))
