"""Per-edge demand for the next day, the prefetch set within a byte capacity, fill traffic.

Demand rows are (edge, title) pairs with ``DEMAND_FEATURES``: every title the edge saw in
the window, every title its viewers are likely to watch (``viewers``: the sum of their
predicted probabilities) and every release of the past week. A Poisson model of the
next day's requests turns them into expected requests, the ``score`` the caches rank by.
It learns from one day's rows and from the past week's releases on their first day
(``release_day_rows``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from edgecache.pipeline.features import LAUNCH_DAYS

DEMAND_FEATURES = (
    "popularity",  # ln(1 + decayed requests at the edge)
    "last_day",  # ln(1 + requests at the edge on T)
    "viewers",  # ln(1 + expected viewers: the sum of the viewers' probabilities)
    "global",  # ln(1 + decayed requests over all edges, per edge)
    "launch",  # exp(-days since release / LAUNCH_DAYS), as of T+1
    "new_release",  # 1: released on T+1 itself (no history anywhere yet)
    "first_episode",  # 1: the first episode of a series
    "movie",  # 1: a movie
)

# What the service knows of a title at an edge that has no history yet: no count of its own,
# no viewers of its own; its totals over the other edges, its launch and its shape.
OPENING_FEATURES = ("global", "launch", "new_release", "first_episode", "movie")


def viewers(scored: DataFrame, prob: str = "p", rate: float = 1.0) -> DataFrame:
    """Per edge and title: the expected number of its viewers who watch it on the next day.

    ``scored`` may hold a sample of the viewers, taken at ``rate``: the sum is scaled up to
    the whole edge."""
    return scored.groupBy("edge_id", "content_id").agg((F.sum(prob) / rate).alias("viewers"))


def demand_rows(
    popularity: DataFrame,
    titles: DataFrame,
    expected_viewers: DataFrame,
    totals: DataFrame | None = None,
    opening: Sequence[str] = (),
    young: Sequence[str] = (),
) -> DataFrame:
    """(edge, title) rows with ``DEMAND_FEATURES`` and size_bytes, for titles out by T+1.

    ``totals`` (content_id, global_decayed): each title's decayed requests over all edges,
    when they come from elsewhere (summed by secure aggregation); by default they are read
    from ``popularity``, where the feature job pooled them. ``opening``: edges that open on
    T+1 with no logs yet; each gets a row for every title out by then, with only what the
    service knows of it (its totals over the other edges, its launch and shape). ``young``:
    edges with a day or so of logs; each gets a row for every title out by then too, so a
    title it has not served yet can still rank by what the service knows of it."""
    spark = titles.sparkSession
    if totals is None:
        totals = popularity.groupBy("content_id").agg(F.max("global_decayed").alias("global_decayed"))
    opening_edges = spark.createDataFrame([(e,) for e in opening], "edge_id string")
    young_edges = spark.createDataFrame([(e,) for e in young], "edge_id string")
    return spark.sql(
        """
        WITH edges AS (SELECT DISTINCT edge_id FROM {popularity}),
        keys AS (
          SELECT edge_id, content_id FROM {popularity}
          UNION SELECT edge_id, content_id FROM {viewers}
          UNION SELECT e.edge_id, t.content_id FROM edges e CROSS JOIN {titles} t
                WHERE t.release_age_days BETWEEN 0 AND :fresh_days
          UNION SELECT o.edge_id, t.content_id FROM {opening} o CROSS JOIN {titles} t
                WHERE o.edge_id NOT IN (SELECT edge_id FROM edges)
          UNION SELECT y.edge_id, t.content_id FROM {young} y CROSS JOIN {titles} t
        )
        SELECT /*+ BROADCAST(t) */ k.edge_id, k.content_id, t.size_bytes,
               ln(1 + coalesce(p.requests_decayed, 0))                     AS popularity,
               ln(1 + coalesce(p.requests_last_day, 0))                    AS last_day,
               ln(1 + coalesce(v.viewers, 0))                              AS viewers,
               ln(1 + coalesce(g.global_decayed, 0) / (SELECT count(*) FROM edges)) AS global,
               t.launch                                                    AS launch,
               CAST(t.release_age_days = 0 AS double)                      AS new_release,
               CAST(t.is_first_episode AS double)                          AS first_episode,
               CAST(t.is_movie AS double)                                  AS movie
        FROM keys k
        JOIN {titles} t ON t.content_id = k.content_id AND t.release_age_days >= 0
        LEFT JOIN {popularity} p ON p.edge_id = k.edge_id AND p.content_id = k.content_id
        LEFT JOIN {viewers} v ON v.edge_id = k.edge_id AND v.content_id = k.content_id
        LEFT JOIN {totals} g ON g.content_id = k.content_id
        """,
        args={"fresh_days": int(LAUNCH_DAYS)},
        totals=totals,
        opening=opening_edges,
        young=young_edges,
        popularity=popularity,
        titles=titles,
        viewers=expected_viewers,
    )


def release_day_rows(events: DataFrame, catalog: DataFrame) -> DataFrame:
    """Demand rows with ``label`` for titles on the day they came out, from past days' events.

    ``events`` has a ``day`` column (a date). For each day, each edge that served requests
    that day gets a row for every title released that day: what the service knew of the
    title the night before (no requests anywhere, launch 1, new_release 1, its shape) and its
    requests at the edge that day. One training day often has no release at all (a service
    may put a title out every few days), and then the model cannot tell what a release
    brings on its first day; these rows tell it, from the edge's own logs. Nobody had
    history of a title before its release, so the viewers' sum is 0 here as it nearly is at
    prediction time."""
    return events.sparkSession.sql(
        """
        WITH released AS (
          SELECT content_id, size_bytes, to_date(release_date) AS day,
                 CAST(coalesce(episode = 1, false) AS double) AS first_episode,
                 CAST(kind = 'movie' AS double) AS movie
          FROM {catalog}),
        edges AS (SELECT DISTINCT day, edge_id FROM {events}),
        served AS (
          SELECT /*+ BROADCAST(r) */ e.day, e.edge_id, e.content_id, count(*) AS requests
          FROM {events} e JOIN released r ON r.content_id = e.content_id AND r.day = e.day
          GROUP BY e.day, e.edge_id, e.content_id)
        SELECT /*+ BROADCAST(r) */ e.edge_id, r.content_id, r.size_bytes,
               0.0D AS popularity, 0.0D AS last_day, 0.0D AS viewers, 0.0D AS global,
               1.0D AS launch, 1.0D AS new_release, r.first_episode, r.movie,
               CAST(coalesce(s.requests, 0) AS double) AS label
        FROM edges e
        JOIN released r ON r.day = e.day
        LEFT JOIN served s ON s.day = e.day AND s.edge_id = e.edge_id AND s.content_id = r.content_id
        """,
        events=events,
        catalog=catalog,
    )


def with_request_counts(rows: DataFrame, next_day: DataFrame) -> DataFrame:
    """``rows`` with ``label``: the title's requests at the edge on the next day."""
    return rows.sparkSession.sql(
        """
        SELECT r.*, CAST(coalesce(n.requests, 0) AS double) AS label
        FROM {rows} r
        LEFT JOIN (SELECT edge_id, content_id, count(*) AS requests FROM {next_day}
                   GROUP BY edge_id, content_id) n
          ON n.edge_id = r.edge_id AND n.content_id = r.content_id
        """,
        rows=rows,
        next_day=next_day,
    )


def rank_demand(scored: DataFrame) -> DataFrame:
    """edge_id, content_id, score (expected requests), rank (1 = most), size_bytes."""
    return scored.sparkSession.sql(
        """
        SELECT edge_id, content_id, score,
               row_number() OVER (PARTITION BY edge_id ORDER BY score DESC, content_id) AS rank,
               size_bytes
        FROM {scored}
        """,
        scored=scored,
    )


def with_releases(baseline: DataFrame, learned: DataFrame) -> DataFrame:
    """A baseline's ranking with the next day's releases ranked by a learned model.

    ``baseline``: edge_id, content_id, score, size_bytes (a baseline's expected requests);
    ``learned``: scored demand rows (``new_release`` and ``score`` among them). A baseline
    has no figure for a title that is not out yet, so at each edge the baseline ranks, each
    title released the next day gets the learned score, brought to the baseline's scale: divided
    by the edge's ratio of the learned to the baseline's total over the titles both score
    (a baseline may count a week's requests, decayed or not, where the model expects a day's).
    Columns of ``rank_demand``."""
    return baseline.sparkSession.sql(
        """
        WITH released AS (SELECT edge_id, content_id, score, size_bytes FROM {learned} WHERE new_release = 1),
        base AS (
          SELECT b.edge_id, b.content_id, b.score, b.size_bytes FROM {baseline} b
          LEFT ANTI JOIN released r ON r.edge_id = b.edge_id AND r.content_id = b.content_id),
        scale AS (
          SELECT b.edge_id, sum(l.score) / sum(b.score) AS ratio
          FROM base b JOIN {learned} l ON l.edge_id = b.edge_id AND l.content_id = b.content_id
          WHERE b.score > 0 GROUP BY b.edge_id HAVING sum(l.score) > 0)
        SELECT edge_id, content_id, score, size_bytes FROM base
        UNION ALL
        SELECT r.edge_id, r.content_id, r.score / s.ratio AS score, r.size_bytes
        FROM released r JOIN scale s ON s.edge_id = r.edge_id
        """,
        baseline=baseline,
        learned=learned,
    ).transform(rank_demand)


def prefetch(demand: DataFrame, capacity_bytes: int, by: tuple[str, ...] = ("edge_id",)) -> DataFrame:
    """Per edge, the titles to pre-load: greedy by expected requests per byte, within capacity.

    Titles are taken in order of score / size while the running total fits; the first
    that does not fit ends the set, so the set is always a prefix of that order. ``by``
    names the columns that make one cache (the model gate fills one per model and edge).
    """
    if capacity_bytes < 0:
        raise ValueError(f"capacity_bytes must not be negative, got {capacity_bytes}")
    extra = [c for c in by if c != "edge_id"]
    keep = ", ".join(f"`{c}`" for c in extra) + (", " if extra else "")
    part = ", ".join(f"`{c}`" for c in by)
    return demand.sparkSession.sql(
        f"""
        SELECT {keep}edge_id, rank, content_id, score, size_bytes FROM (
          SELECT *, sum(size_bytes) OVER (PARTITION BY {part} ORDER BY rank
                                          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS filled
          FROM (SELECT {keep}edge_id, content_id, score, size_bytes,
                       row_number() OVER (PARTITION BY {part}
                                          ORDER BY score / size_bytes DESC, content_id) AS rank
                FROM {{demand}} WHERE score > 0))
        WHERE filled <= :capacity
        """,
        args={"capacity": int(capacity_bytes)},
        demand=demand,
    )


def fill_traffic(today: DataFrame, yesterday: DataFrame) -> DataFrame:
    """Per edge: titles added to and dropped from the prefetch set, and the bytes to fill."""
    return today.sparkSession.sql(
        """
        SELECT coalesce(t.edge_id, y.edge_id) AS edge_id,
               count_if(y.content_id IS NULL)                 AS added,
               count_if(t.content_id IS NULL)                 AS dropped,
               count_if(t.content_id IS NOT NULL AND y.content_id IS NOT NULL) AS kept,
               coalesce(sum(CASE WHEN y.content_id IS NULL THEN t.size_bytes END), 0) AS fill_bytes
        FROM {today} t FULL OUTER JOIN {yesterday} y
          ON t.edge_id = y.edge_id AND t.content_id = y.content_id
        GROUP BY coalesce(t.edge_id, y.edge_id)
        """,
        today=today,
        yesterday=yesterday,
    )
