"""Sort raw log lines into events, duplicates and quarantined lines.

The check of one line is a pure function (``check_line``) on its bytes, so it is exact
(a JSON parser that stops after the first object, or reads text, cannot see trailing data,
a second record or invalid UTF-8) and property-tested on any input. In Spark, lines in the
seed's own shape are accepted by one pattern in the JVM (``plain_record``), which accepts
only lines ``check_line`` accepts, with the same event; every other line goes to
``check_line`` in Python workers (``classify``). Then exact duplicate records are dropped.

For every day: lines in = events accepted + duplicates + lines quarantined; each
quarantined line keeps its bytes, its reason and the file it came from.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from edgecache.schema import DEVICES, ID_RE, LOG_FIELDS

MAX_LINE_BYTES = 64 * 1024  # longer lines are quarantined unparsed
MAX_DURATION_MIN = 24 * 60  # no single view lasts longer than a day
BOM = b"\xef\xbb\xbf"
_TIMESTAMP = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}) ([0-1][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]")
_DEVICES = frozenset(DEVICES)
_decode = msgspec.json.Decoder().decode

# Why a line was quarantined, in the order the checks run (the first failing check wins).
REASONS: tuple[str, ...] = (
    "line_too_long",  # over 64 KiB
    "bad_utf8",  # not valid UTF-8
    "bad_json",  # not one JSON object
    "trailing_data",  # a JSON object followed by something else
    "multiple_records",  # two or more JSON objects on one line
    "missing_field",  # a field of the record is absent or null (edge_id may come from the folder)
    "bad_id",  # an id that is not 1-64 letters, digits, '_' or '-'
    "unknown_device",
    "bad_duration",  # duration not a number (booleans and strings included)
    "negative_duration",
    "duration_too_long",  # over 1,440 minutes
    "bad_timestamp",  # not yyyy-MM-dd HH:mm:ss, or not a real time
    "wrong_day",  # a timestamp outside the day the line was filed under
)


class Event(msgspec.Struct, frozen=True):
    """One accepted record; ``duration`` in whole minutes (floored). Hashable, so exact
    duplicates are found by a set."""

    user_id: str
    device: str
    content_id: str
    duration: int
    timestamp: str
    edge_id: str


def _parse(text: str) -> tuple[str | None, Any]:
    """(None, the value) for one JSON value, else the reason it is not one."""
    try:
        return None, _decode(text)
    except (msgspec.DecodeError, RecursionError):
        pass
    # The slow path, for the few lines the fast parser refused: is there an object first?
    stripped = text.lstrip()
    try:
        obj, end = json.JSONDecoder().raw_decode(stripped)
    except (ValueError, RecursionError):
        return "bad_json", None
    rest = stripped[end:].strip()
    if not rest:  # valid JSON beyond the fast parser's range (a huge integer, say)
        return None, obj
    if not isinstance(obj, dict):
        return "bad_json", None
    return ("multiple_records" if rest.startswith("{") else "trailing_data"), None


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


class _Record(msgspec.Struct):
    """The record's types, checked in C by one typed decode (ids and time by ``_IDS_AND_TIME``)."""

    user_id: str
    device: Literal[DEVICES]  # type: ignore[valid-type]
    content_id: str
    duration: (
        Annotated[int, msgspec.Meta(ge=0, le=MAX_DURATION_MIN)]
        | Annotated[float, msgspec.Meta(ge=0, le=MAX_DURATION_MIN)]
    )
    timestamp: str
    edge_id: str | None = None


_decode_record = msgspec.json.Decoder(_Record).decode
# user, content and edge ids and the timestamp, joined by NUL (which no id may hold): one match.
_IDS_AND_TIME = re.compile("\x00".join([ID_RE.pattern] * 3 + [_TIMESTAMP.pattern])).fullmatch


def check_line(raw: bytes, day: str | None, folder_edge: str | None = None) -> tuple[str | None, Event | None]:
    """(reason, None) for a line that breaks the contract, else (None, the event).

    ``raw`` is the line without its line break; a trailing CR and a leading UTF-8 BOM are
    allowed. ``day`` (YYYY-MM-DD) is the day the line was filed under; None skips that
    check. ``folder_edge`` is the edge of the folder the line came from, used when the
    record has no ``edge_id``.

    Almost every line is good: one typed decode (``_Record``, checked in C) accepts it. Any
    line it refuses goes through ``check_line_slowly``, the reference, which names the reason.
    """
    if raw[-1:] == b"\r":
        raw = raw[:-1]
    if raw[:3] == BOM:
        raw = raw[3:]
    if len(raw) <= MAX_LINE_BYTES:
        try:
            # The decoder need not look inside fields it skips: check UTF-8 first unless ASCII.
            r = _decode_record(raw if raw.isascii() else raw.decode("utf-8"))
        except (UnicodeDecodeError, msgspec.DecodeError, RecursionError):
            pass
        else:
            edge = r.edge_id if r.edge_id is not None else folder_edge
            if (
                edge is not None
                and r.timestamp[:10] == day
                and _IDS_AND_TIME(f"{r.user_id}\x00{r.content_id}\x00{edge}\x00{r.timestamp}")
            ):
                return None, Event(r.user_id, r.device, r.content_id, math.floor(r.duration), r.timestamp, edge)
    return check_line_slowly(raw, day, folder_edge)


def check_line_slowly(raw: bytes, day: str | None, folder_edge: str | None = None) -> tuple[str | None, Event | None]:
    """``check_line`` one check at a time, in the order of ``REASONS``: the reference."""
    if raw[-1:] == b"\r":
        raw = raw[:-1]
    if raw[:3] == BOM:
        raw = raw[3:]
    if len(raw) > MAX_LINE_BYTES:
        return "line_too_long", None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bad_utf8", None
    reason, record = _parse(text)
    if reason is not None:
        return reason, None
    if not isinstance(record, dict):
        return "bad_json", None
    edge = record.get("edge_id")
    if edge is None:
        edge = folder_edge
    if edge is None or any(record.get(name) is None for name in LOG_FIELDS if name != "edge_id"):
        return "missing_field", None
    if not (_is_id(record["user_id"]) and _is_id(record["content_id"]) and _is_id(edge)):
        return "bad_id", None
    if not isinstance(record["device"], str) or record["device"] not in _DEVICES:
        return "unknown_device", None
    duration = record["duration"]
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration):
        return "bad_duration", None
    if duration < 0:
        return "negative_duration", None
    if duration > MAX_DURATION_MIN:
        return "duration_too_long", None
    ts = record["timestamp"]
    match = _TIMESTAMP.fullmatch(ts) if isinstance(ts, str) else None
    if match is None:
        return "bad_timestamp", None
    if match.group(1) != day:  # the regex checked the time of day; the date needs a calendar
        try:
            dt.date.fromisoformat(match.group(1))
        except ValueError:
            return "bad_timestamp", None
        if day is not None:
            return "wrong_day", None
    return None, Event(record["user_id"], record["device"], record["content_id"], math.floor(duration), ts, edge)


@dataclass
class Sorted:
    """What ``sort_lines`` made of some lines."""

    events: list[Event]
    duplicates: int
    quarantined: list[tuple[str, bytes]]  # (reason, line)

    @property
    def lines(self) -> int:
        return len(self.events) + self.duplicates + len(self.quarantined)


def sort_lines(lines: Iterable[bytes], day: str | None, folder_edge: str | None = None) -> Sorted:
    """Every line into exactly one of: an event, a duplicate of an earlier event, or the
    quarantine (the reference semantics of the Spark job, on plain Python lists)."""
    seen: set[Event] = set()
    out = Sorted([], 0, [])
    for raw in lines:
        reason, event = check_line(raw, day, folder_edge)
        if reason is not None:
            out.quarantined.append((reason, raw))
        elif event in seen:
            out.duplicates += 1
        elif event is None:  # check_line gives a reason or an event
            raise AssertionError("check_line gave neither a reason nor an event")
        else:
            seen.add(event)
            out.events.append(event)
    return out


# --- Spark ------------------------------------------------------------------------------

CHECKED_DDL = (
    "reason string, user_id string, device string, content_id string, duration bigint, timestamp string, edge_id string"
)


def _per_row(column: Any) -> list[Any]:
    """A column's values as a list; cheap when, as usual, a batch comes from one file."""
    import pyarrow.compute as pc

    if len(column) and column.null_count == 0 and pc.count_distinct(column).as_py() == 1:
        return [column[0].as_py()] * len(column)
    return column.to_pylist()


def _check_arrays(values: Any, folders: Any, day: str | None) -> Any:
    """``check_line`` over Arrow arrays: a struct array of the ``CHECKED_DDL`` fields."""
    import pyarrow as pa

    results = [check_line(raw, day, folder) for raw, folder in zip(values.to_pylist(), _per_row(folders))]
    events = [e for _, e in results]
    return pa.StructArray.from_arrays(
        [
            pa.array([reason for reason, _ in results], pa.string()),
            pa.array([e and e.user_id for e in events], pa.string()),
            pa.array([e and e.device for e in events], pa.string()),
            pa.array([e and e.content_id for e in events], pa.string()),
            pa.array([e and e.duration for e in events], pa.int64()),
            pa.array([e and e.timestamp for e in events], pa.string()),
            pa.array([e and e.edge_id for e in events], pa.string()),
        ],
        names=["reason", "user_id", "device", "content_id", "duration", "timestamp", "edge_id"],
    )


_ID = r'"([A-Za-z0-9_-]{1,64}+)"'
_SP = "[ \t]*+"  # JSON's blanks inside a line


def plain_pattern(day: str) -> str:
    """A Java pattern for a record of ``day`` in the seed's shape, its fields in groups 1-6:
    ``{"user_id": "..", "device": "..", "content_id": "..", "duration": N, "timestamp": ".."
    [, "edge_id": ".."]}``, keys in that order, blanks allowed between tokens, a BOM first.

    Each group is checked to the character, so the pattern matches only lines that
    ``check_line`` accepts: ids against their alphabet, a device by name, a plain decimal
    duration of at most four integer digits (its bound, 1,440, is checked after), the time
    of day on ``day``. No escapes, no other keys, nothing after the object."""

    def key(name: str) -> str:
        return f'{_SP}"{name}"{_SP}:{_SP}'

    return (
        r"\A\uFEFF?"
        + _SP
        + r"\{"
        + key("user_id")
        + _ID
        + _SP
        + ","
        + key("device")
        + '"('
        + "|".join(DEVICES)
        + ')"'
        + _SP
        + ","
        + key("content_id")
        + _ID
        + _SP
        + ","
        + key("duration")
        + r"((?:0|[1-9][0-9]{0,3}+)(?:\.[0-9]{1,20}+)?)"
        + _SP
        + ","
        + key("timestamp")
        + '"('
        + re.escape(day)
        + r' (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9])"'
        + _SP
        + "(?:,"
        + key("edge_id")
        + _ID
        + _SP
        + ")?"
        + r"\}"
        + _SP
        + r"\r?\z"
    )


def plain_record(lines: Any, day: str) -> tuple[Any, Any, dict[str, Any]]:
    """``lines`` with working columns (``_parts``, ``_edge``, ``_duration``, ``_ok``...) added,
    and (accepted, the event's columns as in ``CHECKED_DDL``) over them, by ``plain_pattern``
    in the JVM.

    Matching one pattern costs about a microsecond a line, against several in Python with
    the transfer to its workers. A line it does not accept is not judged: ``check_line``
    gives the verdict (other key orders, escapes, extra keys, a null edge, bad lines)."""
    from pyspark.sql import functions as F

    # One match, its groups joined by \x01 (which a line that matched cannot hold). Each
    # step is a column of its own: an expression that several columns use would otherwise
    # run once for each of them.
    joined = F.regexp_replace("value", plain_pattern(day), "".join(f"\x01${i}" for i in range(1, 7)))
    lines = (
        lines.withColumn("_joined", joined)
        .withColumn("_parts", F.when(F.startswith("_joined", F.lit("\x01")), F.split("_joined", "\x01")))
        .withColumn("_folder_edge", folder_edge_of(F.col("source")))
    )
    field = [F.get("_parts", i) for i in range(7)]
    lines = lines.withColumn("_edge", F.coalesce(F.nullif(field[6], F.lit("")), F.col("_folder_edge"))).withColumn(
        "_duration", field[4].try_cast("double")
    )
    ok = F.col("_parts").isNotNull() & (F.col("_duration") <= MAX_DURATION_MIN) & F.col("_edge").isNotNull()
    lines = lines.withColumn("_ok", F.coalesce(ok, F.lit(False)))
    columns = {
        "user_id": field[1],
        "device": field[2],
        "content_id": field[3],
        "duration": F.floor("_duration").cast("bigint"),
        "timestamp": field[5],
        "edge_id": F.col("_edge"),
    }
    return lines, F.col("_ok"), columns


def folder_edge_of(source: Any) -> Any:
    """The edge a line's folder names (``.../edge=E/file``), or null."""
    from pyspark.sql import functions as F

    folder = F.substring_index(F.substring_index(source, "/", -2), "/", 1)  # its last folder
    edge = F.substr(folder, F.lit(6))
    # Spark files lines with no edge under __HIVE_DEFAULT_PARTITION__: no edge at all.
    return F.when(
        F.startswith(folder, F.lit("edge="))
        & (edge != "")
        & (edge != "__HIVE_DEFAULT_PARTITION__")
        & F.contains(source, F.lit("/")),
        edge,
    )


def check_in_python(lines: Any, day: str | None) -> Any:
    """``check_line`` over every line of ``lines`` (``value``, ``source``) in Python workers:
    the columns of ``CHECKED_DDL``, plus ``line`` (the bytes) and ``source`` for the lines
    quarantined (a cached day stays small). Only the line and its folder's edge are sent."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    def check(values, folders):  # noqa: ANN001, ANN202 - Spark reads the hints set below
        return _check_arrays(values, folders, day)

    # This module's annotations are strings (PEP 563), which Spark does not resolve.
    check.__annotations__ = {"values": pa.Array, "folders": pa.Array, "return": pa.Array}
    check = F.arrow_udf(check, CHECKED_DDL)  # type: ignore[call-overload]

    line = F.col("value").cast("binary")
    out = lines.select(check(line, folder_edge_of(F.col("source"))).alias("c"), line.alias("line"), "source")
    bad = F.col("c.reason").isNotNull()
    return out.select("c.*", F.when(bad, F.col("line")).alias("line"), F.when(bad, F.col("source")).alias("source"))


def split_plain(lines: Any, day: str | None) -> Any:
    """``lines`` with the columns of ``classify``, the lines ``plain_record`` accepts already
    filled in; the others have no fields yet, and their ``line`` and ``source`` set, for
    ``check_in_python`` to judge (``judged``)."""
    from pyspark.sql import functions as F

    if day is None:  # a date then needs a calendar check: leave every line to check_line
        ok, fields = F.lit(False), {k: F.lit(None).cast(t) for k, t in _FIELD_TYPES.items()}
    else:
        lines, ok, fields = plain_record(lines, day)
    return with_hash(
        lines.select(
            F.lit(None).cast("string").alias("reason"),
            *[F.when(ok, v).alias(k) for k, v in fields.items()],
            F.when(~ok, F.col("value").cast("binary")).alias("line"),
            F.when(~ok, F.col("source")).alias("source"),
        )
    )


def checked(split: Any, judged_rest: Any) -> Any:
    """Every line's outcome: the rows of ``split_plain`` accepted in the JVM, and the rest
    as ``judged`` gave them (both with ``_hash``)."""
    return split.where("line IS NULL").unionByName(judged_rest)


def with_hash(rows: Any) -> Any:
    """``rows`` with ``_hash``, an 8-byte hash of each accepted record (null for the
    others): ``accepted`` finds repeated records by it. Computed on the way into staging,
    so that finding them reads one column, not six."""
    from pyspark.sql import functions as F

    return rows.withColumn(
        "_hash", F.when(F.col("reason").isNull() & F.col("user_id").isNotNull(), F.xxhash64(*_FIELD_TYPES))
    )


_FIELD_TYPES = {
    "user_id": "string",
    "device": "string",
    "content_id": "string",
    "duration": "bigint",
    "timestamp": "string",
    "edge_id": "string",
}


def judged(split: Any, day: str | None) -> Any:
    """The rows of ``split_plain`` that still need ``check_in_python``, judged by it."""
    from pyspark.sql import functions as F

    rest = split.where("line IS NOT NULL").select(F.col("line").cast("string").alias("value"), "source")
    return with_hash(check_in_python(rest, day))


def classify(lines: Any, day: str | None) -> Any:
    """Check every line of ``lines`` (a DataFrame of Spark's text source: ``value``, and
    ``source``, the file) filed under ``day``: the columns of ``CHECKED_DDL``, plus ``line``
    (the bytes) and ``source`` of the lines quarantined.

    The edge a line's folder names (``.../edge=E/file``) stands in for a record without
    ``edge_id``. Lines in the seed's shape are accepted in the JVM; the rest go to Python."""
    split = split_plain(lines, day)
    return checked(split, judged(split, day)).drop("_hash")


MAX_LISTED_HASHES = 100_000  # more repeated records than this are matched by a join


def accepted(classified: Any) -> Any:
    """Typed events from the lines that passed every check, exact duplicates dropped.

    Records whose hash occurs more than once (few: a shipper's retries) are found by one
    aggregation of 8-byte hashes and de-duplicated exactly among themselves; every other
    record stays in the partition, and so the file layout, it was read in (a plain
    ``dropDuplicates`` would shuffle every event, and sums over them downstream would
    change with the shuffle's order)."""
    from pyspark.sql import functions as F

    if "_hash" not in classified.columns:
        classified = with_hash(classified)
    hashed = classified.where("reason IS NULL").select(*_event_columns(), "_hash")
    repeated = hashed.groupBy("_hash").count().where("count > 1").select("_hash")
    listed = repeated.limit(MAX_LISTED_HASHES + 1).collect()
    if not listed:
        return hashed.drop("_hash")
    if len(listed) <= MAX_LISTED_HASHES:  # a filter on a set of literals: no join, no shuffle
        is_repeated = F.col("_hash").isin([r["_hash"] for r in listed])
        unique, again = hashed.where(~is_repeated), hashed.where(is_repeated)
    else:
        unique = hashed.join(F.broadcast(repeated), "_hash", "left_anti")
        again = hashed.join(F.broadcast(repeated), "_hash", "left_semi")
    return unique.drop("_hash").unionByName(again.drop("_hash").dropDuplicates())


def _event_columns() -> list[Any]:
    from pyspark.sql import functions as F

    return [
        "user_id",
        "device",
        "content_id",
        "duration",
        F.to_timestamp("timestamp", "yyyy-MM-dd HH:mm:ss").alias("timestamp"),
        "edge_id",
    ]


def quarantined(classified: Any) -> Any:
    """The rejected lines with their reason and the file they came from; ``line`` is the
    text (invalid UTF-8 shown as U+FFFD) and ``line_base64`` the exact bytes."""
    from pyspark.sql import functions as F

    return classified.where("reason IS NOT NULL").select(
        "reason",
        F.expr("make_valid_utf8(CAST(line AS STRING))").alias("line"),
        F.base64("line").alias("line_base64"),
        "source",
    )


def counts(classified: Any) -> dict[str, int]:
    """Lines by outcome: ``accepted`` (distinct events), ``duplicate`` and each reason."""
    from pyspark.sql import functions as F

    rows = classified.groupBy("reason").agg(F.count("*").alias("n")).collect()
    out = {(r["reason"] or "accepted"): r["n"] for r in rows}
    return out
