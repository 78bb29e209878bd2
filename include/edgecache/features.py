"""Feature transforms in Spark SQL: pure functions from events to feature tables.

The features for a cutoff day T cover the ``window_days`` days ending at T: ``in_window``
keeps those events and adds ``age_days`` (0 on T), which the other transforms use for
recency and exponential decay (``exp(-age_days / decay_days)``). ``events`` has the
columns user_id, device, content_id, duration, timestamp, edge_id; ``catalog`` has
content_id, kind, series_id, episode, genre and release_date. Ties are broken by id
everywhere, so the same input always gives the same rows.
"""

from __future__ import annotations

from pyspark.sql import DataFrame

from edgecache.schema import DEVICES

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
    or shuffle every event again. The home edge is the viewer's most frequent one (the
    lowest id on a tie); the device mix covers the devices of ``schema.DEVICES``, the only
    ones validation admits.
    """
    shares = ", ".join(
        f"struct('{d}' AS device, count_if(device = '{d}') / count(*) AS share)" for d in sorted(DEVICES)
    )
    return events.sparkSession.sql(
        f"""
        SELECT user_id,
               mode(edge_id, true)                                AS edge_id,
               count(*)                                           AS watch_count,
               CAST(size(collect_set(content_id)) AS BIGINT) AS distinct_titles,
               sum(duration)                                      AS minutes_watched,
               CAST(size(collect_set(age_days)) AS BIGINT) AS days_active,
               min(age_days)                                      AS last_age_days,
               max_by(content_id, struct(timestamp, content_id))  AS last_content_id,
               max(timestamp)                                     AS last_watched_at,
               map_from_entries(filter(array({shares}), d -> d.share > 0)) AS device_mix
        FROM {{events}}
        GROUP BY user_id
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


def edge_popularity(events: DataFrame, decay_days: float = 2.0) -> DataFrame:
    """Per edge and title: requests in the window, decayed by age, on the last day; rank.

    ``rank`` orders an edge's titles by plain requests (1 = most requested).
    ``regional_share`` is the title's share of the edge's decayed requests over its share
    of all edges' (above 1: the edge likes it more than the service does).
    """
    if decay_days <= 0:
        raise ValueError(f"decay_days must be positive, got {decay_days}")
    return events.sparkSession.sql(
        """
        WITH counts AS (
          SELECT edge_id, content_id, count(*) AS requests,
                 sum(exp(-age_days / :decay)) AS requests_decayed,
                 count_if(age_days = 0) AS requests_last_day
          FROM {events} GROUP BY edge_id, content_id
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
               edge_share / (global_decayed / all_decayed) AS regional_share
        FROM shares
        """,
        args={"decay": float(decay_days)},
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
