"""Parse raw log lines and sort them into valid events and quarantined lines.

Every line ends up in exactly one of the two outputs, so
lines in = events accepted + lines quarantined, and each quarantined line keeps its reason.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from edgecache.schema import DEVICES, ID_PATTERN, LOG_FIELDS, TIMESTAMP_FORMAT

# Every field is read as a string so a wrong type becomes a precise reason, not a null.
RAW_SCHEMA = T.StructType(
    [T.StructField(name, T.StringType()) for name in LOG_FIELDS]
    + [T.StructField("_corrupt", T.StringType())]
)


def _reason(r: Column) -> Column:
    """The first failing check for parsed record ``r``, or null when it passes them all."""
    ids_ok = (
        r.user_id.rlike(ID_PATTERN) & r.content_id.rlike(ID_PATTERN) & r.edge_id.rlike(ID_PATTERN)
    )
    duration = F.expr("try_cast(r.duration AS DOUBLE)")
    ts = F.expr(f"try_to_timestamp(r.timestamp, '{TIMESTAMP_FORMAT}')")
    missing = F.lit(False)
    for name in LOG_FIELDS:
        missing = missing | r[name].isNull()
    return (
        F.when(r.isNull() | r._corrupt.isNotNull(), "bad_json")
        .when(missing, "missing_field")
        .when(~ids_ok, "bad_id")
        .when(~r.device.isin(*DEVICES), "unknown_device")
        .when(duration.isNull() | F.isnan(duration), "bad_duration")
        .when(duration < 0, "negative_duration")
        .when(ts.isNull(), "bad_timestamp")
    )


def classify(lines: DataFrame) -> DataFrame:
    """Add ``r`` (the parsed record) and ``reason`` (null when valid) to a ``value`` column."""
    parsed = lines.withColumn(
        "r",
        F.from_json(
            "value", RAW_SCHEMA, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}
        ),
    )
    return parsed.withColumn("reason", _reason(F.col("r")))


def accepted(classified: DataFrame) -> DataFrame:
    """Typed events from the lines that passed every check."""
    return classified.where(F.col("reason").isNull()).select(*_event_columns())


def events_with_reason(classified: DataFrame) -> DataFrame:
    """Every line's reason (null when accepted) beside its typed event columns, so one pass
    gives both the counts and the events; the event columns mean nothing where reason is set."""
    return classified.select("reason", *_event_columns())


def _event_columns() -> list[Column]:
    return [
        F.col("r.user_id").alias("user_id"),
        F.col("r.device").alias("device"),
        F.col("r.content_id").alias("content_id"),
        F.expr("CAST(floor(try_cast(r.duration AS DOUBLE)) AS BIGINT)").alias("duration"),
        F.expr(f"try_to_timestamp(r.timestamp, '{TIMESTAMP_FORMAT}')").alias("timestamp"),
        F.col("r.edge_id").alias("edge_id"),
    ]


def quarantined(classified: DataFrame) -> DataFrame:
    """The rejected lines, verbatim, with their reason and the file they came from."""
    return classified.where(F.col("reason").isNotNull()).select(
        "reason", F.col("value").alias("line"), "source"
    )
