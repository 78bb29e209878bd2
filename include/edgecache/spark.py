"""SparkSession set-up shared by the jobs, the CLI and the tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from edgecache.java import require_java

# Defaults for a small embedded run; spark-submit --conf or the Spark connection override them.
DEFAULT_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.showConsoleProgress": "false",
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
    for key, value in DEFAULT_CONF.items():
        if not submitted.contains(key):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    ship_package(spark)
    return spark


def ship_package(spark: SparkSession) -> Path | None:
    """On a cluster master, send the package to the executors (``addPyFile``); in local
    mode the executors are this machine's Python, which has it already."""
    if spark.sparkContext.master.startswith("local"):
        return None
    import tempfile

    from edgecache.packaging import package_zip

    path = package_zip(Path(tempfile.mkdtemp(prefix="edgecache-pyfiles-")))
    spark.sparkContext.addPyFile(str(path))
    return path
