"""Feature transforms in Spark SQL: pure functions from events to feature tables.

``events`` has the columns user_id, device, content_id, duration, timestamp, edge_id.
Ties are broken by id everywhere so the same input always gives the same rows.
"""

from __future__ import annotations

from pyspark.sql import DataFrame


def user_features(events: DataFrame) -> DataFrame:
    """Per viewer: home edge, watch counts, minutes watched and the last title watched."""
    spark = events.sparkSession
    return spark.sql(
        """
        WITH ordered AS (
          SELECT *,
                 row_number() OVER (PARTITION BY user_id
                                    ORDER BY timestamp DESC, content_id DESC) AS recency
          FROM {events}
        ),
        edge_counts AS (
          SELECT user_id, edge_id,
                 row_number() OVER (PARTITION BY user_id
                                    ORDER BY count(*) DESC, edge_id) AS edge_rank
          FROM {events} GROUP BY user_id, edge_id
        )
        SELECT o.user_id,
               first(e.edge_id)                                   AS edge_id,
               count(*)                                           AS watch_count,
               count(DISTINCT o.content_id)                       AS distinct_titles,
               sum(o.duration)                                    AS minutes_watched,
               min_by(o.content_id, o.recency)                    AS last_content_id,
               max(o.timestamp)                                   AS last_watched_at
        FROM ordered o
        JOIN edge_counts e ON e.user_id = o.user_id AND e.edge_rank = 1
        GROUP BY o.user_id
        """,
        events=events,
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


def edge_popularity(events: DataFrame) -> DataFrame:
    """Per edge: requests per title and the title's rank at that edge (1 = most requested)."""
    spark = events.sparkSession
    return spark.sql(
        """
        SELECT edge_id, content_id, requests,
               row_number() OVER (PARTITION BY edge_id
                                  ORDER BY requests DESC, content_id) AS rank
        FROM (SELECT edge_id, content_id, count(*) AS requests
              FROM {events} GROUP BY edge_id, content_id)
        """,
        events=events,
    )
