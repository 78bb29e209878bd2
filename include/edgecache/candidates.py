"""Candidate titles for each viewer and the features the scorer ranks them by (Spark SQL).

Candidates for a viewer at cutoff T, each tagged with every source that proposed it:
  next_episode  the next unwatched episode of each series the viewer watched;
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

LOG_FLOOR = -12.0  # the log of a share where the title has none (about ln 6e-6)

SOURCES = ("next_episode", "transition", "edge_popular", "genre", "fresh")

FEATURES = (
    "next_episode",  # 1: the next unwatched episode of a series the viewer follows
    "series_days",  # ln(1 + days the viewer watched the candidate's series)
    "series_resumed",  # ln(1 + days the viewer picked the series up mid-way: they follow it)
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
        proposed AS (
          SELECT s.user_id, s.next_content_id AS content_id, 'next_episode' AS src FROM {{user_series}} s
          UNION ALL
          SELECT user_id, content_id, 'transition' FROM (
            SELECT u.user_id, t.to_content_id AS content_id,
                   row_number() OVER (PARTITION BY u.user_id
                                      ORDER BY t.transitions DESC, t.to_content_id) AS r
            FROM u JOIN {{transitions}} t
              ON t.edge_id = u.edge_id AND t.from_content_id = u.last_content_id)
          WHERE r <= :n_transitions
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
        SELECT p.user_id, u.edge_id, p.content_id,
               {flags}
        FROM proposed p JOIN u ON u.user_id = p.user_id
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


def candidate_features(
    cands: DataFrame, feats: dict[str, DataFrame], titles: DataFrame, window_days: int
) -> DataFrame:
    """The candidates with every column of ``FEATURES`` (double, never null)."""
    spark = titles.sparkSession
    return spark.sql(
        """
        WITH tp AS (
          SELECT p.edge_id, p.content_id, p.requests_decayed, t.genre
          FROM {popularity} p JOIN {titles} t ON t.content_id = p.content_id
        ),
        total AS (SELECT sum(requests_decayed) AS all_decayed FROM tp),
        glob AS (  -- the service-wide share of each title, and of each title within its genre
          SELECT content_id, genre, sum(requests_decayed) / first(all_decayed) AS global_share,
                 sum(requests_decayed) / sum(sum(requests_decayed)) OVER (PARTITION BY genre) AS in_genre
          FROM tp CROSS JOIN total GROUP BY content_id, genre
        ),
        taste AS (  -- how much more (or less) of each genre an edge watches than the service
          SELECT e.edge_id, e.genre, e.share / g.share AS tilt FROM (
            SELECT edge_id, genre, sum(requests_decayed) / sum(sum(requests_decayed))
                     OVER (PARTITION BY edge_id) AS share
            FROM tp GROUP BY edge_id, genre) e
          JOIN (SELECT genre, sum(requests_decayed) / first(all_decayed) AS share
                FROM tp CROSS JOIN total GROUP BY genre) g ON g.genre = e.genre
        ),
        edge_genre AS (
          SELECT edge_id, genre, sum(requests_decayed) / sum(sum(requests_decayed))
                   OVER (PARTITION BY edge_id) AS share
          FROM tp GROUP BY edge_id, genre
        ),
        loglik AS (
          -- A pick is in the viewer's favourite genre half the time, else follows the edge's
          -- taste: the log-likelihood of the viewer's picks for each favourite genre f, plus
          -- the log prior of f (the edge's taste).
          SELECT u.user_id, f.genre AS fav,
                 ln(first(pf.share)) + sum(ug.picks * ln(0.5 * CAST(ug.genre = f.genre AS double)
                                                         + 0.5 * coalesce(eg.share, 1e-6))) AS ll
          FROM {users} u
          JOIN edge_genre pf ON pf.edge_id = u.edge_id
          JOIN (SELECT DISTINCT genre FROM edge_genre) f ON f.genre = pf.genre
          JOIN {user_genres} ug ON ug.user_id = u.user_id
          LEFT JOIN edge_genre eg ON eg.edge_id = u.edge_id AND eg.genre = ug.genre
          GROUP BY u.user_id, f.genre
        ),
        affinity AS (
          SELECT user_id, genre, w / sum(w) OVER (PARTITION BY user_id) AS share
          FROM (SELECT user_id, fav AS genre, exp(ll - max(ll) OVER (PARTITION BY user_id)) AS w FROM loglik)
        )
        SELECT c.*,
               CAST(c.src_next_episode AS double)                               AS next_episode,
               ln(1 + coalesce(s.days_watched, 0))                             AS series_days,
               ln(1 + coalesce(s.resumed_days, 0))                             AS series_resumed,
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
        LEFT JOIN glob gl ON gl.content_id = c.content_id
        LEFT JOIN taste ta ON ta.edge_id = c.edge_id AND ta.genre = t.genre
        LEFT JOIN affinity g ON g.user_id = c.user_id AND g.genre = t.genre
        LEFT JOIN {user_titles} ut ON ut.user_id = c.user_id AND ut.content_id = c.content_id
        """,
        args={"window": float(window_days), "floor": LOG_FLOOR},
        cands=cands,
        users=feats["users"],
        titles=titles,
        user_series=feats["user_series"],
        transitions=feats["transitions"],
        popularity=feats["popularity"],
        user_genres=feats["user_genres"],
        user_titles=feats["user_titles"],
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
