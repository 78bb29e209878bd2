"""Candidate titles for each viewer and the features the scorer ranks them by (Spark SQL).

Candidates for a viewer at cutoff T, each tagged with every source that proposed it:
  next_episode  the episode after the last one the viewer watched of each series (the
                first again after a series' last episode);
  restart       the first episode of each series the viewer watched on several days;
  transition    the titles viewers at the same edge most often went to from the viewer's
                last title;
  edge_popular  the edge's most requested titles (decayed, so recent days weigh more);
  genre         the edge's favourites in the viewer's favourite genre;
  fresh         movies and first episodes released in the week up to T+1, by interest
                at the edge.
``FEATURES`` are the scorer's inputs: numeric, 0 where a feature does not apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from edgecache.pipeline.features import LAUNCH_DAYS
from edgecache.pipeline.scorer import in_hash_sample

LOG_FLOOR = -12.0  # the log of a share where the title has none (about ln 6e-6)

SOURCES = ("next_episode", "restart", "transition", "edge_popular", "genre", "fresh")

FEATURES = (
    # A series the viewer follows shows as one watched on several days, picked up mid-way:
    # the next episode then is likely; after a one-off sample of a series it is not.
    "next_episode",  # 1: the next episode of a series the viewer watched
    "next_days",  # next_episode x ln(1 + days the viewer watched the series)
    "next_resumed",  # next_episode x ln(1 + days the viewer picked the series up mid-way)
    "series_days",  # (not the next episode) ln(1 + days the viewer watched the candidate's series)
    "series_restart",  # series_days of a first episode: a followed series starting over
    "series_recency",  # exp(-days since the viewer last watched the series)
    "transition",  # ln(1 + moves from the viewer's last title to the candidate at the edge)
    "popularity",  # ln(1 + decayed requests at the edge)
    "trend",  # ln(1 + requests on T) - ln(1 + mean daily requests in the window)
    "pooled",  # ln(pooled share): the service's share of the title, tilted by the edge's genre taste
    "personal",  # ln(0.5 pooled share + 0.5 P(favourite genre) x the title's share within its genre)
    "genre_affinity",  # P(the candidate's genre is the viewer's favourite), given their picks
    "launch",  # exp(-days since release / LAUNCH_DAYS), as of T+1
    "seen",  # 1: the viewer watched the candidate in the window
    "first_episode",  # 1: the first episode of a series
    "movie",  # 1: a movie
    "activity",  # ln(1 + the viewer's views per day in the window)
)


@dataclass(frozen=True)
class CandidateParams:
    """How many titles each source proposes per viewer."""

    popular: int = 20
    transitions: int = 5
    genre: int = 10
    fresh: int = 5


def edge_lists(at_edge: DataFrame, transitions: DataFrame, params: CandidateParams) -> dict[str, DataFrame]:
    """The per-edge sources as small lists, the same for every viewer they apply to:
    ``edges`` (edge_id, popular, fresh), ``genres`` (edge_id, genre, ids) and ``moves``
    (edge_id, from_content_id, ids: the top moves out of each title). ``at_edge`` is
    ``edge_titles``: every released title at every edge, with its requests there."""
    spark = at_edge.sparkSession
    common: dict[str, Any] = dict(
        args={
            "n_popular": params.popular,
            "n_transitions": params.transitions,
            "n_genre": params.genre,
            "n_fresh": params.fresh,
            "fresh_days": int(LAUNCH_DAYS),
        },
        at_edge=at_edge,
        transitions=transitions,
    )
    ranked = materialize(
        spark.sql(
            """
        SELECT edge_id, content_id, genre,
               CASE WHEN requests_decayed IS NOT NULL THEN
                 row_number() OVER (PARTITION BY edge_id, requests_decayed IS NULL
                                    ORDER BY requests_decayed DESC, content_id) END AS decayed_rank,
               CASE WHEN requests_decayed IS NOT NULL THEN
                 row_number() OVER (PARTITION BY edge_id, genre, requests_decayed IS NULL
                                    ORDER BY requests_decayed DESC, content_id) END AS genre_rank,
               CASE WHEN release_age_days <= :fresh_days AND (is_movie OR is_first_episode) THEN
                 row_number() OVER (PARTITION BY edge_id,
                                      release_age_days <= :fresh_days AND (is_movie OR is_first_episode)
                                    ORDER BY coalesce(requests_decayed, 0) + launch DESC, content_id) END
                 AS fresh_rank
        FROM {at_edge}
        """,
            **common,
        )
    )
    edges = spark.sql(
        """
        SELECT edge_id,
               transform(sort_array(collect_list(CASE WHEN decayed_rank <= :n_popular
                                                      THEN struct(decayed_rank, content_id) END)),
                         x -> x.content_id) AS popular,
               transform(sort_array(collect_list(CASE WHEN fresh_rank <= :n_fresh
                                                      THEN struct(fresh_rank, content_id) END)),
                         x -> x.content_id) AS fresh
        FROM {ranked} GROUP BY edge_id
        """,
        ranked=ranked,
        **common,
    )
    genres = spark.sql(
        """
        SELECT edge_id, genre, collect_list(content_id) AS ids FROM {ranked}
        WHERE genre_rank <= :n_genre GROUP BY edge_id, genre
        """,
        ranked=ranked,
        **common,
    )
    # an edge's top moves from each title, ranked before any viewer is joined: joining
    # every move to every viewer first multiplies rows by the popular titles' fan-out
    moves = spark.sql(
        """
        SELECT edge_id, from_content_id, collect_list(to_content_id) AS ids FROM (
          SELECT *, row_number() OVER (PARTITION BY edge_id, from_content_id
                                       ORDER BY transitions DESC, to_content_id) AS r
          FROM {transitions}) WHERE r <= :n_transitions
        GROUP BY edge_id, from_content_id
        """,
        **common,
    )
    return {"edges": materialize(edges), "genres": materialize(genres), "moves": materialize(moves)}


def profiles(feats: dict[str, DataFrame], titles: DataFrame, edge_genre: DataFrame) -> DataFrame:
    """One row per viewer with everything their candidates are built and scored from.

    user_id, edge_id, last_content_id, watch_count, fav_genre (most views, then name),
    series (series_id -> days_watched, resumed_days, last_age_days), next_ids (each
    series' next episode), restart_ids (first episodes of series watched on several days),
    seen (titles watched in the window), and the favourite-genre posterior in closed form
    (picked_ll, aff_max, aff_norm: see ``affinity_sql``).

    The per-viewer tables are joined once here, keyed by viewer, so that every later step
    reads its viewer's row instead of joining each candidate to four tables.
    """
    return titles.sparkSession.sql(
        """
        WITH series AS (
          SELECT /*+ BROADCAST(f) */ s.user_id,
                 map_from_entries(collect_list(struct(s.series_id, struct(s.days_watched, s.resumed_days,
                                                                          s.last_age_days)))) AS series,
                 collect_list(s.next_content_id) AS next_ids,
                 collect_list(CASE WHEN s.days_watched >= 2 THEN f.content_id END) AS restart_ids
          FROM {user_series} s
          LEFT JOIN (SELECT series_id, content_id FROM {titles} WHERE is_first_episode) f
            ON f.series_id = s.series_id
          GROUP BY s.user_id
        ),
        seen AS (SELECT user_id, collect_list(content_id) AS seen FROM {user_titles} GROUP BY user_id),
        -- The favourite genre's posterior (see affinity_sql): per genre the viewer picked at
        -- their edge, ll = ln(share) + picks x ln((1 + share) / share); genres they did not
        -- pick keep ll = ln(share), so only the picked ones need a row.
        picked AS (
          SELECT /*+ BROADCAST(eg) */ ug.user_id, ug.genre, ug.views, eg.share,
                 ln(eg.share) + ug.picks * ln((1 + eg.share) / eg.share) AS ll
          FROM {user_genres} ug JOIN {users} u ON u.user_id = ug.user_id
          LEFT JOIN {edge_genre} eg ON eg.edge_id = u.edge_id AND eg.genre = ug.genre
        ),
        genres AS (
          SELECT user_id, min_by(genre, struct(-views, genre)) AS fav_genre,
                 map_from_entries(collect_list(CASE WHEN share IS NOT NULL THEN struct(genre, ll) END)) AS picked_ll,
                 coalesce(max(ll), 0.0) AS aff_max,
                 greatest(1.0 - coalesce(sum(share), 0.0), 0.0) AS unpicked
          FROM picked GROUP BY user_id
        )
        SELECT u.user_id, u.edge_id, u.last_content_id, u.watch_count, g.fav_genre, s.series,
               coalesce(s.next_ids, CAST(array() AS array<string>)) AS next_ids,
               coalesce(s.restart_ids, CAST(array() AS array<string>)) AS restart_ids,
               coalesce(seen.seen, CAST(array() AS array<string>)) AS seen,
               g.picked_ll, g.aff_max,
               g.unpicked * exp(-g.aff_max)
                 + aggregate(map_values(g.picked_ll), 0D, (acc, x) -> acc + exp(x - g.aff_max)) AS aff_norm
        FROM {users} u
        LEFT JOIN series s ON s.user_id = u.user_id
        LEFT JOIN seen ON seen.user_id = u.user_id
        LEFT JOIN genres g ON g.user_id = u.user_id
        """,
        users=feats["users"],
        user_series=feats["user_series"],
        user_titles=feats["user_titles"],
        user_genres=feats["user_genres"],
        edge_genre=edge_genre,
        titles=titles,
    )


def affinity_sql(c: str, genre: str, edge_share: str) -> str:
    """SQL for P(``genre`` is the viewer's favourite), from profile row ``c`` and the edge's
    share of requests in the genre (``edge_share``, null where the edge has none).

    The model: a pick is in the favourite genre half the time, else follows the edge's
    taste. The posterior of favourite f is proportional to share_f x the likelihood of the
    picks, prod_g (0.5 [g = f] + 0.5 share_g) ^ picks_g; dividing out the factor common
    to every f leaves share_f x ((1 + share_f) / share_f) ^ picks_f. So a genre the viewer
    never picked keeps its prior weight share_f, and the normaliser is the unpicked share
    plus the picked genres' weights (``aff_norm``, scaled by exp(-aff_max) against overflow).
    A viewer with no genre history has 0.
    """
    return (
        f"CASE WHEN {c}.picked_ll IS NULL THEN 0.0 ELSE coalesce("
        f"exp(try_element_at({c}.picked_ll, {genre}) - {c}.aff_max), "
        f"{edge_share} * exp(-{c}.aff_max), 0.0) / {c}.aff_norm END"
    )


def proposals(profile: DataFrame, lists: dict[str, Any], at_edge: DataFrame) -> DataFrame:
    """Each viewer's profile row once per distinct candidate title (``content_id``) out by
    T+1, with one 0/1 column per source and the title's row of ``edge_titles``.

    The sources are lists on the viewer's row (their own, or their edge's, broadcast), so
    the candidates come from an explode: no shuffle, and the rows stay partitioned by
    viewer as the profile was, which the ranking later relies on.
    """
    empty = "CAST(array() AS array<string>)"
    parts = {
        "next_episode": "p.next_ids",
        "restart": "p.restart_ids",
        "transition": f"coalesce(m.ids, {empty})",
        "edge_popular": f"coalesce(e.popular, {empty})",
        "genre": f"coalesce(g.ids, {empty})",
        "fresh": f"coalesce(e.fresh, {empty})",
    }
    flags = ",\n".join(f"CAST(array_contains(c.src_{s}_ids, c.content_id) AS int) AS src_{s}" for s in SOURCES)
    return at_edge.sparkSession.sql(
        f"""
        WITH c AS (
          SELECT /*+ BROADCAST(e, g, m) */ p.*,
                 {", ".join(f"{v} AS src_{s}_ids" for s, v in parts.items())},
                 explode(array_distinct(concat({", ".join(parts.values())}))) AS content_id
          FROM {{profile}} p
          LEFT JOIN {{edges}} e ON e.edge_id = p.edge_id
          LEFT JOIN {{genres}} g ON g.edge_id = p.edge_id AND g.genre = p.fav_genre
          LEFT JOIN {{moves}} m ON m.edge_id = p.edge_id AND m.from_content_id = p.last_content_id
        )
        SELECT /*+ BROADCAST(t) */ c.*, {flags}, t.* EXCEPT (edge_id, content_id)
        FROM c JOIN {{at_edge}} t ON t.edge_id = c.edge_id AND t.content_id = c.content_id  -- out by T+1
        """,
        profile=profile,
        at_edge=at_edge,
        **lists,
    ).drop(*(f"src_{s}_ids" for s in SOURCES))


def _proposed(
    feats: dict[str, DataFrame], titles: DataFrame, params: CandidateParams, totals: DataFrame | None = None
) -> DataFrame:
    """``proposals`` built from the feature tables: profiles, edge lists and edge titles
    (``totals``: see ``title_shares``)."""
    shares = title_shares(feats["popularity"], titles, totals)
    at_edge = edge_titles(feats["popularity"], titles, shares)
    return proposals(
        profiles(feats, titles, shares["edge_genre"]), edge_lists(at_edge, feats["transitions"], params), at_edge
    )


def candidates(
    feats: dict[str, DataFrame], titles: DataFrame, params: CandidateParams = CandidateParams()
) -> DataFrame:
    """Per viewer: user_id, edge_id, content_id and one 0/1 column per source."""
    return _proposed(feats, titles, params).select("user_id", "edge_id", "content_id", *(f"src_{s}" for s in SOURCES))


USER_TABLES = ("users", "user_genres", "user_titles", "user_series")


def sample_users(feats: dict[str, DataFrame], max_users: int, seed: int = 0) -> tuple[dict[str, DataFrame], float]:
    """The feature tables cut down to a hash sample of about ``max_users`` viewers, and the rate.

    Only the per-viewer tables shrink; the per-edge ones (popularity, transitions) stay
    whole, so a sampled viewer's candidates and features are exactly those it would get
    without sampling. The hash of the id, not a random draw, picks the viewers, so a
    re-run picks the same ones.
    """
    if max_users < 1:
        raise ValueError(f"max_users must be at least 1, got {max_users}")
    n = feats["users"].count()
    rate = min(1.0, max_users / n) if n else 1.0
    if rate >= 1.0:
        return feats, 1.0
    keep = in_hash_sample(["user_id"], seed, rate)
    return {k: df.where(keep) if k in USER_TABLES else df for k, df in feats.items()}, rate


def materialize(df: DataFrame) -> DataFrame:
    """Compute ``df`` now and cut its lineage.

    The feature queries nest many joins and windows; without a cut, every later query
    over their result re-plans the whole tree, which costs more than running it. A reliable
    checkpoint (files in the SparkContext's checkpoint folder, ``spark.checkpoint.dir``), not
    a local one: a local checkpoint lives in the executors, and one lost executor would lose
    rows that can no longer be recomputed.
    """
    return df.checkpoint(eager=True)


def title_shares(popularity: DataFrame, titles: DataFrame, totals: DataFrame | None = None) -> dict[str, DataFrame]:
    """Service-wide shares: ``glob`` per title (its share, and its share within its genre),
    ``edge_genre`` per edge and genre (the edge's share of requests in the genre) and
    ``taste`` (that share over the service's: how much more the edge likes the genre).

    ``totals`` (content_id, global_decayed): each title's decayed requests over every edge,
    as the edges' secure aggregation gives them (``edgecache.federated.totals``). Without it
    they are summed here from ``popularity``, where the feature job pooled the edges' rows.
    Either way an edge's own figures (``edge_genre``) come from its own rows only."""
    spark = titles.sparkSession
    if totals is None:
        totals = popularity.groupBy("content_id").agg(F.sum("requests_decayed").alias("global_decayed"))
    service = materialize(
        spark.sql(
            """
        WITH j AS (
          SELECT s.content_id, s.global_decayed, t.genre
          FROM {totals} s JOIN {titles} t ON t.content_id = s.content_id
        )
        -- the total as a one-row aggregate joined on: a window without PARTITION BY would
        -- move every row to a single task
        SELECT j.*, total.all_decayed
        FROM j CROSS JOIN (SELECT sum(global_decayed) AS all_decayed FROM j) total
        """,
            totals=totals,
            titles=titles,
        )
    )
    # try_divide: a genre (or a whole service) with no requests yet has no shares
    glob = spark.sql(
        """
        SELECT content_id, genre, try_divide(global_decayed, all_decayed) AS global_share,
               try_divide(global_decayed, sum(global_decayed) OVER (PARTITION BY genre)) AS in_genre
        FROM {service}
        """,
        service=service,
    )
    edge_genre = spark.sql(
        """
        SELECT p.edge_id, t.genre, sum(p.requests_decayed) / sum(sum(p.requests_decayed))
                 OVER (PARTITION BY p.edge_id) AS share
        FROM {popularity} p JOIN {titles} t ON t.content_id = p.content_id
        GROUP BY p.edge_id, t.genre
        """,
        popularity=popularity,
        titles=titles,
    )
    taste = spark.sql(
        """
        SELECT e.edge_id, e.genre, e.share, try_divide(e.share, g.share) AS tilt
        FROM {edge_genre} e
        JOIN (SELECT genre, try_divide(sum(global_decayed), first(all_decayed)) AS share
              FROM {service} GROUP BY genre) g ON g.genre = e.genre
        """,
        service=service,
        edge_genre=edge_genre,
    )
    return {"glob": materialize(glob), "edge_genre": materialize(edge_genre), "taste": materialize(taste)}


def edge_titles(popularity: DataFrame, titles: DataFrame, shares: dict[str, DataFrame]) -> DataFrame:
    """Per edge and title out by T+1: everything a candidate's features read about the
    title where it is served (its attributes, requests there, service-wide shares, the
    edge's taste for its genre), so that each candidate makes one look-up, not five."""
    return materialize(
        titles.sparkSession.sql(
            """
        SELECT /*+ BROADCAST(gl, ta) */ e.edge_id, t.content_id, t.series_id, t.genre, t.is_first_episode,
               t.is_movie, t.launch, t.release_age_days, p.requests_decayed, p.requests_last_day, p.requests,
               gl.global_share, gl.in_genre, ta.tilt, ta.share AS edge_genre_share
        FROM (SELECT DISTINCT edge_id FROM {popularity}) e CROSS JOIN {titles} t
        LEFT JOIN {popularity} p ON p.edge_id = e.edge_id AND p.content_id = t.content_id
        LEFT JOIN {glob} gl ON gl.content_id = t.content_id
        LEFT JOIN {taste} ta ON ta.edge_id = e.edge_id AND ta.genre = t.genre
        WHERE t.release_age_days >= 0
        """,
            popularity=popularity,
            titles=titles,
            glob=shares["glob"],
            taste=shares["taste"],
        )
    )


def candidate_rows(
    feats: dict[str, DataFrame],
    titles: DataFrame,
    window_days: int,
    params: CandidateParams = CandidateParams(),
    totals: DataFrame | None = None,
) -> DataFrame:
    """Every viewer's candidates: user_id, edge_id, content_id, the src_* flags and every
    column of ``FEATURES`` (double, never null). ``totals``: the service-wide requests per
    title, securely summed (see ``title_shares``)."""
    spark = titles.sparkSession
    rows = _proposed(feats, titles, params, totals)
    # The per-viewer features come from the viewer's own row (series, seen, genre
    # posterior) and the per-title ones from the edge's title row: only the move from the
    # viewer's last title needs a join.
    return spark.sql(
        """
        WITH c AS (
          SELECT *, try_element_at(series, series_id) AS s,
                 """
        + affinity_sql("r", "genre", "edge_genre_share")
        + """ AS g_share
          FROM {rows} r
        )
        SELECT c.user_id, c.edge_id, c.content_id, """
        + ", ".join(f"c.src_{s}" for s in SOURCES)
        + """,
               CAST(c.src_next_episode AS double)                               AS next_episode,
               c.src_next_episode * ln(1 + coalesce(c.s.days_watched, 0))      AS next_days,
               c.src_next_episode * ln(1 + coalesce(c.s.resumed_days, 0))      AS next_resumed,
               (1 - c.src_next_episode) * ln(1 + coalesce(c.s.days_watched, 0)) AS series_days,
               (1 - c.src_next_episode) * CAST(c.is_first_episode AS int)
                 * ln(1 + coalesce(c.s.days_watched, 0))                       AS series_restart,
               coalesce(exp(-c.s.last_age_days), 0.0)                          AS series_recency,
               ln(1 + coalesce(tr.transitions, 0))                             AS transition,
               ln(1 + coalesce(c.requests_decayed, 0))                         AS popularity,
               ln(1 + coalesce(c.requests_last_day, 0))
                 - ln(1 + coalesce(c.requests, 0) / :window)                   AS trend,
               coalesce(ln(c.global_share * c.tilt), :floor)                   AS pooled,
               coalesce(ln(0.5 * c.global_share * c.tilt
                           + 0.5 * c.g_share * c.in_genre), :floor)            AS personal,
               c.g_share                                                       AS genre_affinity,
               c.launch                                                        AS launch,
               CAST(array_contains(c.seen, c.content_id) AS double)            AS seen,
               CAST(c.is_first_episode AS double)                              AS first_episode,
               CAST(c.is_movie AS double)                                      AS movie,
               ln(1 + c.watch_count / :window)                                 AS activity
        FROM c
        LEFT JOIN {transitions} tr ON tr.edge_id = c.edge_id AND tr.from_content_id = c.last_content_id
                                  AND tr.to_content_id = c.content_id
        """,
        args={"window": float(window_days), "floor": LOG_FLOOR},
        rows=rows,
        transitions=feats["transitions"],
    )


def with_labels(rows: DataFrame, next_day: DataFrame) -> DataFrame:
    """``rows`` with ``label`` 1.0 where the viewer requested the title on the next day."""
    return rows.sparkSession.sql(
        """
        SELECT r.*, CAST(n.user_id IS NOT NULL AS double) AS label
        FROM {rows} r
        LEFT JOIN (SELECT DISTINCT user_id, content_id FROM {next_day}) n
          ON n.user_id = r.user_id AND n.content_id = r.content_id
        """,
        rows=rows,
        next_day=next_day,
    )
