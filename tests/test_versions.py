"""The Python side of Spark and the JVM it drives must be the same release."""

from __future__ import annotations

from importlib.metadata import version

import pyspark


def test_pyspark_version_matches_the_jvm(spark):
    assert pyspark.__version__ == spark.version


def test_pyspark_client_is_pinned_to_the_same_release():
    # Both distributions install files into the one `pyspark` package.
    assert version("pyspark-client") == version("pyspark") == pyspark.__version__
