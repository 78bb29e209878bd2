"""A simple, honest next-title model and the per-edge prefetch set.

Candidates for each viewer, best first:
  1. the next episode of the series the viewer watched last;
  2. titles viewers at the same edge most often went to from that last title;
  3. the edge's most requested titles.
The first ``top_k`` distinct candidates (the last title itself excluded) form the ranked
prediction; the first of them is what ``GET user:<id>`` returns.
"""

from __future__ import annotations

from pyspark.sql import DataFrame


def predict_users(
    users: DataFrame,
    transitions: DataFrame,
    popularity: DataFrame,
    catalog: DataFrame,
    top_k: int,
) -> DataFrame:
    """Per viewer: edge_id, content_id (top title), ranked (top-k titles) and source."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    spark = users.sparkSession
    return spark.sql(
        """
        WITH next_episode AS (
          SELECT u.user_id, nxt.content_id, 0 AS tier, 0L AS ord
          FROM {users} u
          JOIN {catalog} cur ON cur.content_id = u.last_content_id AND cur.kind = 'episode'
          JOIN {catalog} nxt ON nxt.series_id = cur.series_id AND nxt.episode = cur.episode + 1
        ),
        from_transitions AS (
          SELECT u.user_id, t.to_content_id AS content_id, 1 AS tier,
                 row_number() OVER (PARTITION BY u.user_id
                                    ORDER BY t.transitions DESC, t.to_content_id) AS ord
          FROM {users} u
          JOIN {transitions} t ON t.edge_id = u.edge_id AND t.from_content_id = u.last_content_id
        ),
        from_popularity AS (
          SELECT u.user_id, p.content_id, 2 AS tier, p.rank AS ord
          FROM {users} u
          JOIN {popularity} p ON p.edge_id = u.edge_id AND p.rank <= :top_k + 1
        ),
        candidates AS (
          SELECT c.user_id, c.content_id, min(struct(c.tier, c.ord)) AS best
          FROM (SELECT * FROM next_episode UNION ALL SELECT * FROM from_transitions
                UNION ALL SELECT * FROM from_popularity) c
          JOIN {users} u ON u.user_id = c.user_id AND c.content_id <> u.last_content_id
          GROUP BY c.user_id, c.content_id
        ),
        ranked AS (
          SELECT user_id,
                 slice(transform(sort_array(collect_list(struct(best, content_id))),
                                 x -> x.content_id), 1, :top_k) AS ranked,
                 element_at(sort_array(collect_list(struct(best, content_id))), 1).best.tier
                   AS top_tier
          FROM candidates GROUP BY user_id
        )
        SELECT u.user_id, u.edge_id, r.ranked[0] AS content_id, r.ranked,
               CASE r.top_tier WHEN 0 THEN 'next_episode' WHEN 1 THEN 'transition'
                               ELSE 'edge_popular' END AS source
        FROM {users} u JOIN ranked r ON r.user_id = u.user_id
        """,
        args={"top_k": top_k},
        users=users,
        transitions=transitions,
        popularity=popularity,
        catalog=catalog,
    )


def edge_demand(popularity: DataFrame) -> DataFrame:
    """Per edge: every title seen in the window, ranked by expected requests for D+1.

    The simple model expects tomorrow to look like the window: score = requests in it.
    Cache sizes are applied by the reader (prefetch, evaluation), so one ranking serves all.
    """
    return popularity.select(
        "edge_id", "content_id", popularity["requests"].cast("double").alias("score"), "rank"
    )


def prefetch(popularity: DataFrame, capacity: int) -> DataFrame:
    """Per edge: the most requested titles up to ``capacity`` titles, with their rank."""
    if capacity < 0:
        raise ValueError(f"capacity must not be negative, got {capacity}")
    return popularity.where(popularity["rank"] <= capacity).select(
        "edge_id", "rank", "content_id", "requests"
    )
