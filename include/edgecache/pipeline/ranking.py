"""Per-viewer rankings: the foundation's simple model, and the top-k of a scored candidate set.

The simple model (kept as the baseline the learned scorer is measured against):

Candidates for each viewer, best first:
  1. the next episode of the series the viewer watched last;
  2. titles viewers at the same edge most often went to from that last title;
  3. the edge's most requested titles.
The first ``top_k`` distinct candidates (the last title itself excluded) form the ranked
prediction; the first of them is what ``GET user:<id>`` returns.
"""

from __future__ import annotations

from pyspark.sql import DataFrame

from edgecache.pipeline.candidates import SOURCES
from edgecache.pipeline.demand import rank_demand


def predict_users(
    users: DataFrame, transitions: DataFrame, popularity: DataFrame, catalog: DataFrame, top_k: int
) -> DataFrame:
    """Per viewer: edge_id, content_id (top title), ranked (top-k titles), scores (none) and source.

    A viewer's transition candidates are the ``top_k + 1`` most frequent titles after their
    last one, ranked once per edge and title rather than once per viewer: a popular title
    has thousands of successors and as many viewers, and the rest can never reach the
    list. (``top_k`` would do: the next episode, the one successor that may rank higher,
    also comes first on its own. The spare row covers a title followed by itself.)"""
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
        top_transitions AS (
          SELECT * FROM (
            SELECT edge_id, from_content_id, to_content_id,
                   row_number() OVER (PARTITION BY edge_id, from_content_id
                                      ORDER BY transitions DESC, to_content_id) AS ord
            FROM {transitions})
          WHERE ord <= :top_k + 1
        ),
        from_transitions AS (
          SELECT u.user_id, t.to_content_id AS content_id, 1 AS tier, t.ord
          FROM {users} u
          JOIN top_transitions t ON t.edge_id = u.edge_id AND t.from_content_id = u.last_content_id
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
               CAST(NULL AS array<double>) AS scores,
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


def edge_demand(popularity: DataFrame, titles: DataFrame, window_days: int = 1) -> DataFrame:
    """Per edge: every title seen in the window, with its expected requests for D+1.

    The simple model expects tomorrow to look like the window: score = the window's mean
    requests per day. Same columns as ``edgecache.pipeline.demand.rank_demand``.
    """
    if window_days < 1:
        raise ValueError(f"window_days must be at least 1, got {window_days}")
    return rank_demand(
        popularity.join(titles.select("content_id", "size_bytes"), "content_id").selectExpr(
            "edge_id", "content_id", f"requests / {float(window_days)!r} AS score", "size_bytes"
        )
    )


def rank_candidates(scored: DataFrame, prob: str = "p") -> DataFrame:
    """``scored`` with each candidate's rank ``r`` among its viewer's (1 = most likely; ties
    by title id) and ``source``, the first of its src_* flags in ``SOURCES`` order.

    A window over the viewer: when ``scored`` is still partitioned by viewer (as
    ``edgecache.pipeline.candidates.candidate_rows`` leaves it) this sorts in place, no shuffle."""
    source = "CASE " + " ".join(f"WHEN src_{s} = 1 THEN '{s}'" for s in SOURCES) + " END"
    return scored.selectExpr(
        "*", f"{source} AS source", f"row_number() OVER (PARTITION BY user_id ORDER BY `{prob}` DESC, content_id) AS r"
    )


def top_lists(ranked: DataFrame, top_k: int, prob: str = "p") -> DataFrame:
    """Per viewer: edge_id, content_id (top title), ranked (top-k, best first), scores,
    source, from the output of ``rank_candidates``."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    return ranked.sparkSession.sql(
        f"""
        WITH lists AS (
          SELECT user_id, first(edge_id) AS edge_id,
                 sort_array(collect_list(struct(r, content_id, `{prob}` AS p, source))) AS top
          FROM {{ranked}} WHERE r <= :top_k GROUP BY user_id
        )
        SELECT user_id, edge_id, top[0].content_id AS content_id, top.content_id AS ranked, top.p AS scores,
               top[0].source AS source
        FROM lists
        """,
        args={"top_k": top_k},
        ranked=ranked,
    )


def rank_users(scored: DataFrame, top_k: int, prob: str = "p") -> DataFrame:
    """Per viewer: edge_id, content_id (top title), ranked (top-k, best first), scores, source.

    ``scored`` has one row per candidate with its probability ``prob`` and the src_*
    flags of ``edgecache.pipeline.candidates``; ``source`` names the top title's first source.
    """
    return top_lists(rank_candidates(scored, prob), top_k, prob)
