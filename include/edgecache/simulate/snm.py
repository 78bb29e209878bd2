"""The shot noise model workload (``workload`` = ``snm``): popularity made of bursts.

After Traverso, Ahmed, Garetto, Giaccone, Leonardi and Niccolini, "Temporal locality in
today's content caching: why it matters and how to model it" (ACM SIGCOMM CCR 43(5), 2013).
Each item, a movie or a whole series, is a shot: it starts on its release day, brings a total
volume V of requests and lives about L days; at age a its request rate is V h(a), where the
pulse h decays exponentially with mean L (``snm_shape`` exp) or stays flat for L days and
stops (uniform). New shots keep arriving, so what is popular today is what started lately,
not a fixed ranking: a cache must follow the arrivals.

The catalog, the viewers, the edges and everything from a session to a log line come from
``edgecache.simulate.workload``; this module only decides how many sessions a chunk of viewers has
and what they pick. The choices it makes:

- arrivals: the items' start days are a Poisson process over ``SHOT_WINDOW`` (so ids grow
  with time), or exactly ``releases_per_day`` a day through the year from EPOCH;
- volumes V: the catalog model's Zipf weights (``alpha``), heavy-tailed and dealt at random;
- lifetimes L: lognormal around a mean of ``snm_lifetime_days`` (most bursts are short, a
  few last for months);
- a day's total stays near ``events``: the shots share it by their rate that day, so the
  knob means the same in both models (the model's own day-to-day swings are left out);
- edges: each shot has its own edge mix: an edge's share of the viewers' activity, times its
  genre taste, times gamma noise with coefficient of variation 1/sqrt(4 ``regional_skew``)
  (``regional_skew`` 0: neither taste nor noise, every edge sees the same mix). From the day
  new edges open (``new_edges``) the shares follow the viewers who moved there;
- series: a session starts where the shot's audience has got to, at one of the episodes a
  viewer who started on the release day would have reached at binge pace.

``follow_prob``, ``launch_boost`` and ``launch_decay_days`` belong to the catalog model and
do nothing here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pyarrow as pa

from edgecache.settings import WorkloadParams
from edgecache.simulate.base import (
    GENRES,
    RELEASE_YEAR_DAYS,
    Workload,
    chunk_users,
    daily_releases,
    day_index,
    edges_on,
    genre_probs,
    session_items,
    session_views,
)

# Shots start from WARMUP_DAYS before EPOCH (so the first days of 2025 already have a mix of
# young and old bursts) to the year's end.
WARMUP_DAYS = 60
SHOT_WINDOW = (-WARMUP_DAYS, RELEASE_YEAR_DAYS)
LIFETIME_SIGMA = 1.0  # spread of the lognormal lifetimes
EDGE_MIX_SHAPE = 4.0  # gamma shape of a shot's edge noise per unit of regional_skew


def shot_starts(params: WorkloadParams, n_items: int) -> np.ndarray:
    """Start (release) day of each item, in days since EPOCH, non-decreasing in the item's id."""
    if params.releases_per_day > 0:
        # The back catalog arrived at the same pace before EPOCH.
        per_day = params.releases_per_day
        back = n_items - per_day * RELEASE_YEAR_DAYS
        return daily_releases((np.arange(n_items) - back) // per_day, per_day)
    rng = np.random.default_rng([params.seed, 5])
    return np.floor(np.sort(rng.uniform(*SHOT_WINDOW, size=n_items))).astype(np.int64)


def with_shots(wl: Workload) -> Workload:
    """``wl`` with each shot's lifetime and edge mix, and the session rate the model uses."""
    p = wl.params
    rng = np.random.default_rng([p.seed, 6])
    n_items = len(wl.item_len)
    lifetime = p.snm_lifetime_days * np.exp(LIFETIME_SIGMA * rng.standard_normal(n_items) - LIFETIME_SIGMA**2 / 2)
    edge_activity = _edge_activity(wl, wl.user_edge, p.edges)
    noise = None
    if p.regional_skew > 0:
        shape = EDGE_MIX_SHAPE * p.regional_skew
        noise = rng.gamma(shape, 1 / shape, size=(n_items, p.edges))
    mix = _item_mix(wl, edge_activity, noise)
    # Views per activity unit: shot_sessions divides by the day's views per session.
    sessions = p.events / max(float(wl.user_activity.sum()), 1e-9)
    return replace(
        wl,
        item_lifetime=lifetime,
        item_edge_mix=mix,
        item_edge_noise=noise,
        edge_activity=edge_activity,
        sessions_per_activity=sessions,
    )


def with_new_edges(wl: Workload) -> Workload:
    """``wl`` (with its shots and the viewers' new edges) ready for the new edges: no share of
    any shot before they open, and their own noise in the mix (a stream of its own, so the
    other edges' draws stay put). ``day_mix`` redraws the mix from the opening day."""
    p = wl.params
    if not p.new_edges:
        return wl
    assert wl.item_edge_mix is not None and wl.edge_activity is not None, "the shots come first"
    n_items = len(wl.item_len)
    noise = wl.item_edge_noise
    if noise is not None:
        shape = EDGE_MIX_SHAPE * p.regional_skew
        extra = np.random.default_rng([p.seed, 9]).gamma(shape, 1 / shape, size=(n_items, p.new_edges))
        noise = np.hstack([noise, extra])
    return replace(
        wl,
        item_edge_mix=np.hstack([wl.item_edge_mix, np.zeros((n_items, p.new_edges))]),
        item_edge_noise=noise,
        edge_activity=np.vstack([wl.edge_activity, np.zeros((p.new_edges, len(GENRES)))]),
    )


def _edge_activity(wl: Workload, user_edge: np.ndarray, n_edges: int) -> np.ndarray:
    """[edge, genre] share of the viewers' activity, with each viewer at ``user_edge``."""
    cell = user_edge.astype(np.int64) * len(GENRES) + wl.user_genre
    activity = np.bincount(cell, weights=wl.user_activity, minlength=n_edges * len(GENRES))
    return (activity / activity.sum()).reshape(n_edges, len(GENRES))


def _item_mix(wl: Workload, edge_activity: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
    """[item, edge] share of each shot's requests at each edge: the edge's share of the
    activity times its taste for the shot's genre, times the noise."""
    mix = edge_activity.sum(axis=1)[None, :] * wl.edge_genre_taste[:, wl.item_genre].T
    if noise is not None:
        mix = mix * noise
    mix /= mix.sum(axis=1, keepdims=True)
    return mix


def _mix_on(wl: Workload, day: int) -> tuple[np.ndarray, np.ndarray]:
    """The [item, edge] mix and [edge, genre] activity on ``day``: from the day new edges
    open, with the viewers who moved counted at their new edge."""
    assert wl.item_edge_mix is not None and wl.edge_activity is not None, "an snm workload has its mix"
    if wl.user_new_edge is None or day < wl.new_edge_from:
        return wl.item_edge_mix, wl.edge_activity
    edges = edges_on(wl, day, np.arange(len(wl.user_edge)))
    activity = _edge_activity(wl, edges, len(wl.edge_genre_taste))
    return _item_mix(wl, activity, wl.item_edge_noise), activity


def _pulse_cdf(params: WorkloadParams, age: np.ndarray, lifetime: np.ndarray) -> np.ndarray:
    """Share of a shot's volume requested by ``age`` days after its start."""
    if params.snm_shape == "uniform":
        return np.clip(age / lifetime, 0.0, 1.0)
    return 1.0 - np.exp(-np.clip(age, 0, None) / lifetime)


def shot_rates(wl: Workload, day: int) -> np.ndarray:
    """Each item's expected requests on ``day`` (relative): its volume times its pulse over the day."""
    assert wl.item_lifetime is not None, "an snm workload has burst lifetimes"
    age = (day - wl.item_release).astype(np.float64)
    cdf = _pulse_cdf(wl.params, age + 1, wl.item_lifetime) - _pulse_cdf(wl.params, age, wl.item_lifetime)
    rate = wl.item_weight * cdf
    if rate.sum() == 0:  # past every burst (uniform pulses, late dates): the back catalog by volume
        rate = np.where(age >= 0, wl.item_weight, 0.0)
    return rate


def _reached(wl: Workload, item: np.ndarray, day: int) -> np.ndarray:
    """Episodes of each item a viewer who started on its release day has reached by ``day``."""
    age = np.maximum(day - wl.item_release[item], 0)
    return np.minimum(wl.item_len[item], 1 + age / (1 - wl.params.binge_prob))


def _mean_session_views(wl: Workload, day: int) -> np.ndarray:
    """Expected views of a session of each item on ``day`` (1 for a movie): a binge of
    geometric length from a first episode uniform over those reached, cut at the series' end."""
    b = wl.params.binge_prob
    reached = _reached(wl, np.arange(len(wl.item_len)), day)
    first = np.arange(int(wl.item_len.max()))[None, :]  # [1, first episode offset]
    chance = np.clip(np.minimum(first + 1, reached[:, None]) - first, 0, None) / reached[:, None]
    left = np.maximum(wl.item_len[:, None] - first, 1)  # episodes from there to the end
    return (chance * (1 - b**left) / (1 - b)).sum(axis=1)


def day_mix(wl: Workload, day: int) -> tuple[np.ndarray, np.ndarray]:
    """[edge, item] chance of a session at each edge picking each item on ``day``, and each
    edge's sessions per unit of viewer activity relative to ``sessions_per_activity``."""
    rate = shot_rates(wl, day)
    item_mix, edge_activity = _mix_on(wl, day)
    load = rate[:, None] * item_mix  # [item, edge]: the day's requests by shot and edge
    edge_load = load.sum(axis=0)
    total = edge_load.sum()
    probs = (load / np.where(edge_load > 0, edge_load, 1.0)).T
    if total == 0:  # before the first shot: nothing to watch
        return probs, np.zeros(len(edge_load))
    # What sessions at each edge pick (half by the viewer's favourite genre: session_items),
    # and so how many views a session there makes.
    act = edge_activity.sum(axis=1)
    genre_mix = edge_activity / np.where(act > 0, act, 1.0)[:, None]  # [edge, genre]
    picked = 0.5 * probs + 0.5 * np.einsum("eg,egi->ei", genre_mix, genre_probs(wl, probs))
    views_per_session = picked @ _mean_session_views(wl, day)  # [edge]; 0 where an edge has nothing yet
    # An edge's sessions follow its share of the day's requests, not only its size; the day's
    # total stays at about `events` views.
    per_session = np.where(views_per_session > 0, views_per_session, 1.0)
    return probs, edge_load / total / np.where(act > 0, act, 1.0) / per_session


def expected_share(wl: Workload, users: np.ndarray, date: str) -> float:
    """The share of ``date``'s views expected from ``users``."""
    day = day_index(date)
    scale = day_mix(wl, day)[1]
    weight = wl.user_activity * scale[edges_on(wl, day, np.arange(len(wl.user_edge)))]
    return float(weight[users].sum() / max(weight.sum(), 1e-300))


def generate_snm_chunk(wl: Workload, date: str, chunk: int) -> pa.RecordBatch:
    """One chunk of viewers' views on ``date`` under the shot noise model (see LOG_SCHEMA)."""
    p = wl.params
    day = day_index(date)
    users = chunk_users(wl, chunk)
    rng = np.random.default_rng([p.seed, 7, dt.date.fromisoformat(date).toordinal(), chunk])
    probs, scale = day_mix(wl, day)

    # Sessions: Poisson per viewer, by activity and the edge's share of the day.
    n_sess = rng.poisson(wl.user_activity[users] * wl.sessions_per_activity * scale[edges_on(wl, day, users)])
    s_user = np.repeat(users, n_sess)
    local = np.repeat(np.arange(len(users)), n_sess)
    n = len(s_user)
    item = session_items(wl, probs, s_user, rng, day)
    # A series session starts somewhere among the episodes the shot's audience has reached.
    n_eps = wl.item_len[item]
    first_ep = np.minimum((rng.random(n) * _reached(wl, item, day)).astype(np.int64), n_eps - 1)
    wanted = rng.geometric(1 - p.binge_prob, size=n)
    length = np.where(n_eps == 1, 1, np.minimum(wanted, n_eps - first_ep))
    return session_views(wl, date, users, s_user, local, item, first_ep, length, rng)
