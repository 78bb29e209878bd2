"""The features stage (task ``spark_features``): validate day D's logs, then build the feature tables.

**The transforms** (the first half of this module) are Spark SQL functions from events to
feature tables. The features for a cutoff day T cover the ``window_days`` days ending at T: ``in_window``
keeps those events and adds ``age_days`` (0 on T), which the other transforms use for
recency and exponential decay (``exp(-age_days / decay_days)``). ``events`` has the
columns user_id, device, content_id, duration, timestamp, edge_id; ``catalog`` has
content_id, kind, series_id, episode, genre and release_date. Ties are broken by id
everywhere, so the same input always gives the same rows.

**The job** (``run``, ``main``): validate day D's logs (quarantining bad lines) and build the feature tables.

Features are built for D and, when they are missing, for D-1: the predict step trains on
D-1's features against what viewers watched on D.

Each day's events, quarantine and features are committed as whole folders (see
``edgecache.layout.staging``): a day counts as validated, and its features as ready, only
once committed, so a killed run is redone rather than trusted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from edgecache.layout import COMMIT_MARKER, Layout, committed, read_json, shift_day, staging, write_json_atomic
from edgecache.pipeline.catalog import extend_inferred, is_inferred, read_catalog, read_spark, write_catalog
from edgecache.pipeline.job import InputError, base_parser, positive_float, positive_int, run_job
from edgecache.pipeline.spark import in_parallel
from edgecache.pipeline.validate import accepted, checked, counts, judged, quarantined, split_plain
from edgecache.schema import DEVICES
from edgecache.settings import Settings

LAUNCH_DAYS = 7.0  # e-folding time of a release's launch interest, in days


def in_window(events: DataFrame, cutoff: str, window_days: int) -> DataFrame:
    """The events of the ``window_days`` days ending at ``cutoff``, with their age in days."""
    if window_days < 1:
        raise ValueError(f"window_days must be at least 1, got {window_days}")
    return events.sparkSession.sql(
        """
        SELECT *, datediff(to_date(:cutoff), to_date(timestamp)) AS age_days
        FROM {events}
        WHERE to_date(timestamp) BETWEEN date_sub(to_date(:cutoff), :window - 1) AND to_date(:cutoff)
        """,
        args={"cutoff": cutoff, "window": window_days},
        events=events,
    )


def user_features(events: DataFrame) -> DataFrame:
    """Per viewer: home edge, watch counts, active days, device mix, the last title watched.

    One aggregation per viewer, with no window and no DISTINCT: each of those would sort
    or shuffle every event again. The home edge is the most frequent one on the viewer's
    last active day (the lowest id on a tie): a viewer who moves, say to an edge that has
    just opened, is served where they watch now, from the day they move. The device mix
    covers the devices of ``schema.DEVICES``, the only ones validation admits.
    """
    shares = ", ".join(
        f"struct('{d}' AS device, count_if(device = '{d}') / count(*) AS share)" for d in sorted(DEVICES)
    )
    return events.sparkSession.sql(
        f"""
        SELECT user_id,
               array_sort(transform(array_distinct(last_day_edges),
                                    e -> named_struct('views', -size(filter(last_day_edges, x -> x = e)), 'edge', e))
                         )[0].edge                                AS edge_id,
               watch_count, distinct_titles, minutes_watched, days_active, last_age_days, last_content_id,
               last_watched_at, device_mix
        FROM (SELECT *, transform(filter(edge_days, v -> v.age = last_age_days), v -> v.edge) AS last_day_edges
              FROM (
        SELECT user_id,
               collect_list(named_struct('age', age_days, 'edge', edge_id)) AS edge_days,
               count(*)                                           AS watch_count,
               CAST(size(collect_set(content_id)) AS BIGINT) AS distinct_titles,
               sum(duration)                                      AS minutes_watched,
               CAST(size(collect_set(age_days)) AS BIGINT) AS days_active,
               min(age_days)                                      AS last_age_days,
               max_by(content_id, struct(timestamp, content_id))  AS last_content_id,
               max(timestamp)                                     AS last_watched_at,
               map_from_entries(filter(array({shares}), d -> d.share > 0)) AS device_mix
        FROM {{events}}
        GROUP BY user_id))
        """,
        events=events,
    )


def user_genres(events: DataFrame, catalog: DataFrame) -> DataFrame:
    """Per viewer and genre: views, picks (a movie, or a series on one day, counts once:
    the choices the viewer made) and the genre's share of the viewer's views."""
    return events.sparkSession.sql(
        """
        SELECT e.user_id, c.genre, count(*) AS views,
               CAST(size(collect_set(struct(e.age_days, coalesce(c.series_id, c.content_id)))) AS BIGINT) AS picks,
               count(*) / sum(count(*)) OVER (PARTITION BY e.user_id) AS share
        FROM {events} e JOIN {catalog} c ON c.content_id = e.content_id
        GROUP BY e.user_id, c.genre
        """,
        events=events,
        catalog=catalog,
    )


def user_titles(events: DataFrame) -> DataFrame:
    """Per viewer and title: views in the window and days since the last one."""
    return events.sparkSession.sql(
        "SELECT user_id, content_id, count(*) AS views, min(age_days) AS last_age_days "
        "FROM {events} GROUP BY user_id, content_id",
        events=events,
    )


def user_series(events: DataFrame, catalog: DataFrame) -> DataFrame:
    """Per viewer and series: days watched, days it was resumed mid-series (a viewer who
    follows a series, rather than sampling it), the last episode seen and the next one.

    The next episode follows the last one watched (by time); after a series' last
    episode it is the first again, as a viewer who finished a series starts it over.
    """
    return events.sparkSession.sql(
        """
        WITH views AS (
          SELECT e.user_id, c.series_id, c.episode, e.timestamp, e.content_id, e.age_days
          FROM {events} e JOIN {catalog} c ON c.content_id = e.content_id
          WHERE c.series_id IS NOT NULL
        ),
        per_day AS (
          SELECT user_id, series_id, age_days, count(*) AS views,
                 min_by(episode, struct(timestamp, content_id)) AS first_episode,
                 max_by(episode, struct(timestamp, content_id)) AS last_episode
          FROM views GROUP BY user_id, series_id, age_days
        ),
        per_series AS (
          SELECT user_id, series_id,
                 count(*)                                            AS days_watched,
                 count_if(first_episode > 1)                         AS resumed_days,
                 sum(views)                                          AS views,
                 min(age_days)                                       AS last_age_days,
                 min_by(last_episode, age_days)                      AS last_episode
          FROM per_day GROUP BY user_id, series_id
        ),
        lengths AS (
          SELECT series_id, max(episode) AS episodes FROM {catalog}
          WHERE series_id IS NOT NULL GROUP BY series_id
        )
        SELECT p.user_id, p.series_id, p.days_watched, p.resumed_days, p.views, p.last_age_days, p.last_episode,
               n.content_id AS next_content_id
        FROM per_series p
        JOIN lengths l ON l.series_id = p.series_id
        JOIN {catalog} n ON n.series_id = p.series_id
                        AND n.episode = p.last_episode % l.episodes + 1
        """,
        events=events,
        catalog=catalog,
    )


def transitions(events: DataFrame) -> DataFrame:
    """Per edge: how often a viewer went from one title straight to another."""
    spark = events.sparkSession
    return spark.sql(
        """
        WITH steps AS (
          SELECT edge_id, content_id AS from_content_id,
                 lead(content_id) OVER (PARTITION BY user_id
                                        ORDER BY timestamp, content_id) AS to_content_id
          FROM {events}
        )
        SELECT edge_id, from_content_id, to_content_id, count(*) AS transitions
        FROM steps
        WHERE to_content_id IS NOT NULL AND to_content_id <> from_content_id
        GROUP BY edge_id, from_content_id, to_content_id
        """,
        events=events,
    )


# The most one viewer adds to an edge's ``requests_decayed_clipped``: the L2 norm of the
# viewer's decayed requests per title. The totals over the edges under DP read that column,
# so one viewer moves them by at most this much (``edgecache.federated.totals``). At 2 the
# clip keeps 72 to 73 % of the requests and 98 to 99 % of the top 5 % of titles on three
# workload families (bench/dp_totals.py).
VIEWER_CLIP = 2.0


def edge_popularity(events: DataFrame, decay_days: float = 2.0, viewer_clip: float = VIEWER_CLIP) -> DataFrame:
    """Per edge and title: requests in the window, decayed by age, on the last day; rank.

    ``rank`` orders an edge's titles by plain requests (1 = most requested).
    ``regional_share`` is the title's share of the edge's decayed requests over its share
    of all edges' (above 1: the edge likes it more than the service does).
    ``requests_decayed_clipped`` is ``requests_decayed`` with each viewer's decayed
    requests per title at the edge scaled down to an L2 norm of at most ``viewer_clip``.
    """
    if decay_days <= 0 or viewer_clip <= 0:
        raise ValueError(f"decay_days and viewer_clip must be positive, got {decay_days} and {viewer_clip}")
    return events.sparkSession.sql(
        """
        -- Spread by viewer once: the per-viewer sums and the viewer's norm then need no
        -- shuffle of their own (1.4 times the unclipped table's time, against 2.1 without).
        WITH viewer_titles AS (
          SELECT edge_id, user_id, content_id, count(*) AS n,
                 sum(exp(-age_days / :decay)) AS decayed, count_if(age_days = 0) AS last_day
          FROM (SELECT * FROM {events} DISTRIBUTE BY edge_id, user_id) GROUP BY edge_id, user_id, content_id
        ),
        scaled AS (
          SELECT *, decayed * least(1.0, :clip / sqrt(sum(decayed * decayed) OVER (PARTITION BY edge_id, user_id)))
                    AS clipped
          FROM viewer_titles
        ),
        counts AS (
          SELECT edge_id, content_id, sum(n) AS requests, sum(decayed) AS requests_decayed,
                 sum(last_day) AS requests_last_day, sum(clipped) AS requests_decayed_clipped
          FROM scaled GROUP BY edge_id, content_id
        ),
        -- the service's total as a one-row aggregate joined on, not a window over all rows:
        -- a window without PARTITION BY moves every row to a single task
        total AS (SELECT sum(requests_decayed) AS all_decayed FROM counts),
        shares AS (
          SELECT c.*,
                 requests_decayed / sum(requests_decayed) OVER (PARTITION BY edge_id) AS edge_share,
                 sum(requests_decayed) OVER (PARTITION BY content_id) AS global_decayed,
                 total.all_decayed
          FROM counts c CROSS JOIN total
        )
        SELECT edge_id, content_id, requests,
               row_number() OVER (PARTITION BY edge_id ORDER BY requests DESC, content_id) AS rank,
               requests_decayed, requests_last_day, global_decayed,
               edge_share / (global_decayed / all_decayed) AS regional_share,
               requests_decayed_clipped
        FROM shares
        """,
        args={"decay": float(decay_days), "clip": float(viewer_clip)},
        events=events,
    )


def title_features(catalog: DataFrame, cutoff: str) -> DataFrame:
    """Per title, as seen on the day after ``cutoff``: release age, launch interest, shape, size."""
    return catalog.sparkSession.sql(
        """
        SELECT content_id, kind, series_id, episode, genre, size_bytes,
               datediff(date_add(to_date(:cutoff), 1), to_date(release_date)) AS release_age_days,
               CASE WHEN datediff(date_add(to_date(:cutoff), 1), to_date(release_date)) >= 0
                    THEN exp(-datediff(date_add(to_date(:cutoff), 1), to_date(release_date)) / :launch)
                    ELSE 0.0 END AS launch,
               kind = 'movie' AS is_movie,
               coalesce(episode = 1, false) AS is_first_episode
        FROM {catalog}
        """,
        args={"cutoff": cutoff, "launch": LAUNCH_DAYS},
        catalog=catalog,
    )


FEATURE_TABLES = ("users", "user_genres", "user_titles", "user_series", "transitions", "popularity")


def build_features(
    events: DataFrame, catalog: DataFrame, cutoff: str, window_days: int, decay_days: float
) -> dict[str, DataFrame]:
    """Every feature table for ``cutoff``, from events that may span more than the window."""
    w = in_window(events, cutoff, window_days)
    return {
        "users": user_features(w),
        "user_genres": user_genres(w, catalog),
        "user_titles": user_titles(w),
        "user_series": user_series(w, catalog),
        "transitions": transitions(w),
        "popularity": edge_popularity(w, decay_days),
    }


def build_parser() -> argparse.ArgumentParser:
    d = Settings.from_env()
    p = base_parser("Validate the logs of the window and build the feature tables for day D (and D-1).")
    p.add_argument(
        "--window-days",
        type=positive_int,
        default=d.window_days,
        help=f"days of history, ending at --date, that the features cover (default {d.window_days})",
    )
    p.add_argument(
        "--decay-days",
        type=positive_float,
        default=d.decay_days,
        help=f"e-folding time of the popularity decay, in days (default {d.decay_days})",
    )
    return p


def window_dates(date: str, days: int) -> list[str]:
    end = dt.date.fromisoformat(date)
    return [(end - dt.timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]


def validate_day(spark: SparkSession, layout: Layout, date: str) -> dict[str, int]:
    """Split a day's log lines into events and quarantine; return the lines by outcome:
    ``accepted`` (distinct events), ``duplicate`` and each quarantine reason."""
    lines = spark.read.text(str(layout.logs(date))).select("value", F.col("_metadata.file_path").alias("source"))
    # Each line is checked once, into staging tables the three outputs then read: cheaper
    # than caching a day of 10 million rows in the JVM's heap. The lines in the seed's shape
    # are accepted in the JVM on the way in; only the others (few, as a rule) go to Python.
    stage = layout.root / ".staging" / f"validate-{date}"
    split_plain(lines, date).write.mode("overwrite").parquet(str(stage / "plain"))
    split = spark.read.parquet(str(stage / "plain"))
    judged(split, date).write.mode("overwrite").parquet(str(stage / "judged"))
    classified = checked(split, spark.read.parquet(str(stage / "judged")))
    with staging(layout.quarantine(date)) as tmp:
        quarantined(classified).write.mode("overwrite").json(str(tmp))
    by_outcome = counts(classified)
    # The events are committed last: their marker is what says the day was validated. The
    # checked lines go just before, so a kill leaves them only for a day validated again.
    with staging(layout.events(date)) as tmp:
        accepted(classified).write.mode("overwrite").parquet(str(tmp))
        shutil.rmtree(stage, ignore_errors=True)
    events = spark.read.parquet(str(layout.events(date))).count()
    by_outcome["duplicate"] = by_outcome.pop("accepted", 0) - events
    by_outcome["accepted"] = events
    return by_outcome


def manifest(cutoff: str, args: argparse.Namespace, days: list[str]) -> dict[str, Any]:
    return {"cutoff": cutoff, "window_days": args.window_days, "decay_days": args.decay_days, "days": days}


def write_features(
    spark: SparkSession, layout: Layout, events: DataFrame, catalog: DataFrame, cutoff: str, args: argparse.Namespace
) -> dict[str, int]:
    """Build every feature table for ``cutoff`` and commit them with their manifest as one
    folder (the day's old folder stays in place until then); return rows per table."""
    days = [d for d in window_dates(cutoff, args.window_days) if committed(layout.events(d))]
    with staging(layout.features_day(cutoff)) as tmp:

        def write(table: tuple[str, DataFrame]) -> tuple[str, int]:
            name, df = table
            df.write.mode("overwrite").parquet(str(tmp / name))
            return name, spark.read.parquet(str(tmp / name)).count()

        tables = build_features(events, catalog, cutoff, args.window_days, args.decay_days)
        rows = dict(in_parallel(write, tables.items()))
        write_json_atomic(tmp / "manifest.json", manifest(cutoff, args, days))
    return rows


def features_ready(layout: Layout, cutoff: str, args: argparse.Namespace) -> bool:
    """True when the day's features were committed with this window and decay."""
    if not committed(layout.features_day(cutoff)):
        return False
    m = read_json(layout.features(cutoff, "manifest.json"))
    return m["window_days"] == args.window_days and m["decay_days"] == args.decay_days


def check_day_logs(layout: Layout, date: str) -> None:
    """A day's logs are there, committed and not empty, or a one-line error that says what to run."""
    logs = layout.logs(date)
    files = [p for p in logs.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))] if logs.is_dir() else []
    if not files:
        raise InputError(
            f"no logs for {date} at {logs}: run `edgecache generate` or `edgecache ingest` for {date} first"
        )
    if not layout.has_logs(date):
        raise InputError(
            f"the logs for {date} at {logs} are incomplete (no {COMMIT_MARKER} marker: the "
            f"generate or ingest that wrote them did not finish): run it again for {date}"
        )
    if all(p.stat().st_size == 0 for p in files):
        raise InputError(f"the logs for {date} at {logs} are empty")


def check(args: argparse.Namespace) -> None:
    check_day_logs(Layout(args.data_dir.resolve()), args.date)


def infer_catalog_from(spark: SparkSession, layout: Layout, events: DataFrame) -> int | None:
    """With no catalog, or an inferred one, add the titles these events name; titles added."""
    if layout.catalog.exists() and not is_inferred(layout.catalog_info):
        return None
    longest = events.groupBy("content_id").agg(F.max("duration").alias("duration")).toPandas()
    old = read_catalog(layout.catalog) if layout.catalog.exists() else None
    catalog = extend_inferred(old, longest)
    write_catalog(catalog, layout.catalog)
    write_json_atomic(layout.catalog_info, {"source": "inferred", "titles": len(catalog)})
    return len(catalog) - (0 if old is None else len(old))


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.data_dir.resolve())
    date = args.date

    # The window of D and of D-1 (yesterday's features train today's model): validate any
    # day whose logs are committed but whose events are not (a first run, a backfill, or a
    # validation that was killed part-way), beside D itself. Each day commits on its own.
    previous = shift_day(date, -1)
    span = window_dates(date, args.window_days + 1)
    backfilled = [d for d in span[:-1] if not committed(layout.events(d)) and layout.has_logs(d)]
    outcome = in_parallel(lambda d: validate_day(spark, layout, d), [date, *backfilled])[0]
    active_users = spark.read.parquet(str(layout.events(date))).select("user_id").distinct().count()
    lines_in = sum(outcome.values())
    accepted_n = outcome.pop("accepted")
    duplicates = outcome.pop("duplicate")
    days = [d for d in span if committed(layout.events(d))]
    build_previous = previous in days and not features_ready(layout, previous, args)
    # On a nightly run D-1's features exist, so the day before D's window is not read.
    read = days if build_previous else [d for d in days if d in window_dates(date, args.window_days)]
    events = spark.read.parquet(*[str(layout.events(d)) for d in read]).cache()
    inferred = infer_catalog_from(spark, layout, events)
    catalog = read_spark(spark, layout.catalog)

    cutoffs = [date, previous] if build_previous else [date]
    rows = in_parallel(lambda c: write_features(spark, layout, events, catalog, c, args), cutoffs)[0]
    events.unpersist()
    return {
        "lines_in": lines_in,
        "accepted": accepted_n,
        "duplicates": duplicates,
        "quarantined": sum(outcome.values()),
        "active_users": active_users,
        "quarantined_by_reason": dict(sorted(outcome.items())),
        "window_days_found": [d for d in window_dates(date, args.window_days) if d in days],
        "days_validated": [*backfilled, date],
        "previous_day_features_built": build_previous,
        "catalog_titles_inferred": inferred,
        "feature_rows": rows,
        "output": str(layout.features(date, "")),
    }


def main(argv: list[str] | None = None) -> int:
    return run_job("features", build_parser(), run, argv, check=check)
