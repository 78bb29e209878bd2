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

from pyspark.sql import DataFrame

from edgecache.features import LAUNCH_DAYS
from edgecache.scorer import in_hash_sample

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


def candidates(feats: dict[str, DataFrame], titles: DataFrame, params: CandidateParams = CandidateParams()) -> DataFrame:
    """Per viewer: user_id, edge_id, content_id and one 0/1 column per source."""
    spark = titles.sparkSession
    flags = ",\n".join(f"max(CAST(src = '{s}' AS int)) AS src_{s}" for s in SOURCES)
    return spark.sql(
        f"""
        WITH u AS (SELECT user_id, edge_id, last_content_id FROM {{users}}),
        fav_genre AS (
          SELECT user_id, genre FROM (
            SELECT user_id, genre,
                   row_number() OVER (PARTITION BY user_id ORDER BY views DESC, genre) AS r
            FROM {{user_genres}}) WHERE r = 1
        ),
        pop AS (
          SELECT p.*, t.genre, t.is_movie, t.is_first_episode, t.launch,
                 row_number() OVER (PARTITION BY p.edge_id
                                    ORDER BY p.requests_decayed DESC, p.content_id) AS decayed_rank
          FROM {{popularity}} p JOIN {{titles}} t ON t.content_id = p.content_id
        ),
        edges AS (SELECT DISTINCT edge_id FROM u),
        fresh AS (
          SELECT edge_id, content_id FROM (
            SELECT e.edge_id, t.content_id,
                   row_number() OVER (PARTITION BY e.edge_id
                                      ORDER BY coalesce(p.requests_decayed, 0) + t.launch DESC,
                                               t.content_id) AS r
            FROM edges e CROSS JOIN {{titles}} t
            LEFT JOIN {{popularity}} p ON p.edge_id = e.edge_id AND p.content_id = t.content_id
            WHERE t.release_age_days BETWEEN 0 AND :fresh_days AND (t.is_movie OR t.is_first_episode))
          WHERE r <= :n_fresh
        ),
        genre_top AS (
          SELECT edge_id, genre, content_id FROM (
            SELECT edge_id, genre, content_id,
                   row_number() OVER (PARTITION BY edge_id, genre
                                      ORDER BY requests_decayed DESC, content_id) AS r
            FROM pop) WHERE r <= :n_genre
        ),
        -- an edge's top moves from each title, ranked before the join: joining every
        -- move to every viewer first multiplies rows by the popular titles' fan-out
        top_moves AS (
          SELECT edge_id, from_content_id, to_content_id, transitions FROM (
            SELECT *, row_number() OVER (PARTITION BY edge_id, from_content_id
                                         ORDER BY transitions DESC, to_content_id) AS r
            FROM {{transitions}}) WHERE r <= :n_transitions
        ),
        proposed AS (
          SELECT s.user_id, s.next_content_id AS content_id, 'next_episode' AS src FROM {{user_series}} s
          UNION ALL
          SELECT /*+ BROADCAST(t) */ s.user_id, t.content_id, 'restart' FROM {{user_series}} s
          JOIN {{titles}} t ON t.series_id = s.series_id AND t.is_first_episode
          WHERE s.days_watched >= 2
          UNION ALL
          SELECT u.user_id, t.to_content_id, 'transition' FROM u
          JOIN top_moves t ON t.edge_id = u.edge_id AND t.from_content_id = u.last_content_id
          UNION ALL
          SELECT u.user_id, p.content_id, 'edge_popular' FROM u
          JOIN pop p ON p.edge_id = u.edge_id AND p.decayed_rank <= :n_popular
          UNION ALL
          SELECT u.user_id, g.content_id, 'genre' FROM u
          JOIN fav_genre f ON f.user_id = u.user_id
          JOIN genre_top g ON g.edge_id = u.edge_id AND g.genre = f.genre
          UNION ALL
          SELECT u.user_id, f.content_id, 'fresh' FROM u JOIN fresh f ON f.edge_id = u.edge_id
        )
        SELECT /*+ BROADCAST(t) */ p.user_id, u.edge_id, p.content_id,
               {flags}
        FROM proposed p JOIN u ON u.user_id = p.user_id
        JOIN {{titles}} t ON t.content_id = p.content_id AND t.release_age_days >= 0  -- out by T+1
        GROUP BY p.user_id, u.edge_id, p.content_id
        """,
        args={"n_popular": params.popular, "n_transitions": params.transitions, "n_genre": params.genre,
              "n_fresh": params.fresh, "fresh_days": int(LAUNCH_DAYS)},
        users=feats["users"],
        user_genres=feats["user_genres"],
        user_series=feats["user_series"],
        transitions=feats["transitions"],
        popularity=feats["popularity"],
        titles=titles,
    )


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
    over their result re-plans the whole tree, which costs more than running it.
    """
    return df.localCheckpoint(eager=True)


def title_shares(popularity: DataFrame, titles: DataFrame) -> dict[str, DataFrame]:
    """Service-wide shares: ``glob`` per title (its share, and its share within its genre),
    ``edge_genre`` per edge and genre (the edge's share of requests in the genre) and
    ``taste`` (that share over the service's: how much more the edge likes the genre)."""
    spark = titles.sparkSession
    tp = materialize(spark.sql(
        """
        SELECT p.edge_id, p.content_id, p.requests_decayed, t.genre,
               sum(p.requests_decayed) OVER () AS all_decayed
        FROM {popularity} p JOIN {titles} t ON t.content_id = p.content_id
        """,
        popularity=popularity, titles=titles,
    ))
    glob = spark.sql(
        """
        SELECT content_id, genre, sum(requests_decayed) / first(all_decayed) AS global_share,
               sum(requests_decayed) / sum(sum(requests_decayed)) OVER (PARTITION BY genre) AS in_genre
        FROM {tp} GROUP BY content_id, genre
        """,
        tp=tp,
    )
    edge_genre = spark.sql(
        """
        SELECT edge_id, genre, sum(requests_decayed) / sum(sum(requests_decayed))
                 OVER (PARTITION BY edge_id) AS share
        FROM {tp} GROUP BY edge_id, genre
        """,
        tp=tp,
    )
    taste = spark.sql(
        """
        SELECT e.edge_id, e.genre, e.share / g.share AS tilt
        FROM {edge_genre} e
        JOIN (SELECT genre, sum(requests_decayed) / first(all_decayed) AS share
              FROM {tp} GROUP BY genre) g ON g.genre = e.genre
        """,
        tp=tp, edge_genre=edge_genre,
    )
    return {"glob": materialize(glob), "edge_genre": materialize(edge_genre), "taste": materialize(taste)}


def genre_affinity(users: DataFrame, user_genres: DataFrame, edge_genre: DataFrame) -> DataFrame:
    """Per viewer and genre: the probability that it is the viewer's favourite genre.

    A pick is in the viewer's favourite genre half the time, else follows the edge's
    taste: the posterior of each favourite genre f is proportional to the edge's share of
    f (the prior) times the likelihood of the viewer's picks given f.
    """
    return users.sparkSession.sql(
        """
        WITH loglik AS (
          SELECT /*+ BROADCAST(pf) */ u.user_id, pf.genre,
                 ln(first(pf.share)) + sum(ug.picks * ln(0.5 * CAST(ug.genre = pf.genre AS double)
                                                         + 0.5 * coalesce(eg.share, 1e-6))) AS ll
          FROM {users} u
          JOIN {edge_genre} pf ON pf.edge_id = u.edge_id
          JOIN {user_genres} ug ON ug.user_id = u.user_id
          LEFT JOIN {edge_genre} eg ON eg.edge_id = u.edge_id AND eg.genre = ug.genre
          GROUP BY u.user_id, pf.genre
        )
        SELECT user_id, genre, w / sum(w) OVER (PARTITION BY user_id) AS share
        FROM (SELECT user_id, genre, exp(ll - max(ll) OVER (PARTITION BY user_id)) AS w FROM loglik)
        """,
        users=users, user_genres=user_genres, edge_genre=edge_genre,
    )


def candidate_features(
    cands: DataFrame, feats: dict[str, DataFrame], titles: DataFrame, window_days: int
) -> DataFrame:
    """The candidates with every column of ``FEATURES`` (double, never null)."""
    spark = titles.sparkSession
    shares = title_shares(feats["popularity"], titles)
    affinity = materialize(genre_affinity(feats["users"], feats["user_genres"], shares["edge_genre"]))
    # The small tables come from local checkpoints, which carry no size estimate: without
    # the hint Spark shuffles every candidate row to join each of them.
    return spark.sql(
        """
        SELECT /*+ BROADCAST(t, gl, ta) */ c.*,
               CAST(c.src_next_episode AS double)                               AS next_episode,
               c.src_next_episode * ln(1 + coalesce(s.days_watched, 0))        AS next_days,
               c.src_next_episode * ln(1 + coalesce(s.resumed_days, 0))        AS next_resumed,
               (1 - c.src_next_episode) * ln(1 + coalesce(s.days_watched, 0))  AS series_days,
               (1 - c.src_next_episode) * CAST(t.is_first_episode AS int)
                 * ln(1 + coalesce(s.days_watched, 0))                         AS series_restart,
               coalesce(exp(-s.last_age_days), 0.0)                            AS series_recency,
               ln(1 + coalesce(tr.transitions, 0))                             AS transition,
               ln(1 + coalesce(p.requests_decayed, 0))                         AS popularity,
               ln(1 + coalesce(p.requests_last_day, 0))
                 - ln(1 + coalesce(p.requests, 0) / :window)                   AS trend,
               coalesce(ln(gl.global_share * ta.tilt), :floor)                 AS pooled,
               coalesce(ln(0.5 * gl.global_share * ta.tilt
                           + 0.5 * coalesce(g.share, 0.0) * gl.in_genre), :floor) AS personal,
               coalesce(g.share, 0.0)                                          AS genre_affinity,
               t.launch                                                        AS launch,
               CAST(ut.user_id IS NOT NULL AS double)                          AS seen,
               CAST(t.is_first_episode AS double)                              AS first_episode,
               CAST(t.is_movie AS double)                                      AS movie,
               ln(1 + u.watch_count / :window)                                 AS activity
        FROM {cands} c
        JOIN {users} u ON u.user_id = c.user_id
        JOIN {titles} t ON t.content_id = c.content_id
        LEFT JOIN {user_series} s ON s.user_id = c.user_id AND s.series_id = t.series_id
        LEFT JOIN {transitions} tr ON tr.edge_id = c.edge_id AND tr.from_content_id = u.last_content_id
                                  AND tr.to_content_id = c.content_id
        LEFT JOIN {popularity} p ON p.edge_id = c.edge_id AND p.content_id = c.content_id
        LEFT JOIN {glob} gl ON gl.content_id = c.content_id
        LEFT JOIN {taste} ta ON ta.edge_id = c.edge_id AND ta.genre = t.genre
        LEFT JOIN {affinity} g ON g.user_id = c.user_id AND g.genre = t.genre
        LEFT JOIN {user_titles} ut ON ut.user_id = c.user_id AND ut.content_id = c.content_id
        """,
        args={"window": float(window_days), "floor": LOG_FLOOR},
        cands=cands,
        users=feats["users"],
        titles=titles,
        user_series=feats["user_series"],
        transitions=feats["transitions"],
        popularity=feats["popularity"],
        user_titles=feats["user_titles"],
        glob=shares["glob"],
        taste=shares["taste"],
        affinity=affinity,
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
