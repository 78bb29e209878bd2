"""Rules the serving side owns and the evaluation replays: predictive admission and the
next-episode map.

The edge service (``edgecache.serving.delivery``) decides each request by the admission rule
below, and the warm (``edgecache.serving.warm_cache``) loads what it reads; the evaluation replays the
same rule over a day's trace (``edgecache.evaluation.policies``) to measure it. The rule lives here,
with what serves, so that serving never depends on the evaluation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# --- predictive admission ---------------------------------------------------------------
#
# Five rankings of the titles, each a sorted set of values that compare across titles
# without ever being rewritten (a value that decays is stored as its logarithm plus the
# decay time elapsed so far, so an untouched title falls behind as the others move on):
#
#   pred    ln(prior + ADMISSION_EPS) + (t - t0) / ADMISSION_TAU: the night's prediction (the
#           title's predicted requests, 0 if unpredicted), decaying by e every ADMISSION_TAU
#           seconds since the title was last requested (t0: midnight UTC of the day);
#   slow, medium, fast
#           ln of the title's requests, decaying by e every m capacities of requested size
#           (m = 80, 20, 5: ADMISSION_COUNTS). With the request clock c (the size of all
#           requests so far, this one included), a request of weight w sets
#           v <- lae(v, ln(w) + c / (m * capacity)), lae(a, b) = ln(e^a + e^b);
#   recent  the limit of no memory, the last request only: v <- max(v, ln(w) + c / capacity).
#
# A request weighs 1. The counting rankings know only titles requested today, pred every
# predicted title from the start. Warm-up: the ranking's top that fits is cached, valued
# ln(score + eps) in pred and ADMISSION_UNASKED below that in the counting rankings' cached
# titles (below every title requested today, the least predicted lowest), so that with
# useless predictions a prefetched title nobody asks for is the first to go.
#
# Each ranking earns a score: before a request for x, a ranking scores 1 if x is among its
# top n titles (n: the titles the cache holds; ties: the higher id ranks higher), and every
# score decays by ADMISSION_MEMORY per request. The leader, the highest score (ties: in
# LEAD_ORDER, slow first), decides the request. Good predictions make pred the leader and
# the cache keeps what they promised; useless ones lose to a frequency ranking (slow,
# medium: LFU-like) or a recency one (fast, recent: LRU-like), whichever the day rewards.
#
# On a request for title x at time t (L: the leader; titles compare under L by (value, id);
# u = (t - t0) / ADMISSION_TAU):
#   1. x's values: pred = ln(prior(x) + eps) + u, the counting rankings add a request of
#      weight 1. x cached: hit. Not cached: miss, admit(x).
#   2. x has a next episode z: pred(z) = max(pred(z), ln(prior(z) + ADMISSION_BOOST + eps)
#      + u); the counting rankings add a request of weight ADMISSION_SEQUEL (the odds it
#      follows soon). z not cached: admit(z).
# admit(y): refused if y is larger than the cache. Otherwise take cached titles in
# increasing order under L until y fits; each must be strictly below y under L. If one is
# not, refuse and keep them all; else evict them and cache y.

ADMISSION_TAU = 4 * 3600.0  # seconds; a binge's next episode is asked for within the hour, a stale boost fades in hours
# In score units: the predicted requests of the title on the day. A binge's next episode
# is asked for within the hour with the workload's default odds of 0.6, about what a
# title expected 8 times a day gets in 1.5 hours; 5 to 10 passed on every size and mode.
ADMISSION_BOOST = 8.0
ADMISSION_EPS = 1e-3  # keeps ln finite for unpredicted titles (score 0)
# The counting rankings: name and memory m in capacities of requested size (0: the last
# request only). Measured with bench/admission.py (the generator, IRM, shot noise, spikes,
# tiny caches, a tiny edge) and on small IRM and shot-noise days of eight seeds each: with
# these four every trace stayed within 0.005 of the best classic policy at every size in
# titles and in bytes. With slow, fast and recent only, shot noise lost up to 0.016; with
# medium, fast and recent, small byte caches under IRM lost 0.007 to LFU; with medium and
# fast, the largest caches under shot noise lost to LRU.
ADMISSION_COUNTS = (("slow", 80.0), ("medium", 20.0), ("fast", 5.0), ("recent", 0.0))
RANKINGS = ("pred", *(name for name, _ in ADMISSION_COUNTS))
LEAD_ORDER = ("slow", "pred", "medium", "fast", "recent")  # who leads on equal scores
ADMISSION_SEQUEL = 0.6  # a next episode counts as this much of a request (the binge odds)
# Scores forget about 1/500 per request: a change of regime within the day (a bad
# prediction found out, a burst of new titles) changes the leader within a few hundred
# requests (0.995 to 0.999 measured alike).
ADMISSION_MEMORY = 0.998
# A prefetched title nobody has asked for yet is valued ln(score + eps) - ADMISSION_UNASKED
# by the counting rankings: below every title requested today (those values are above -1),
# and e^-100 of a request once it is asked for.
ADMISSION_UNASKED = 100.0


def next_episode_rows(catalog: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (episode, the same series' next episode) of a catalog frame with
    series_id and episode (position in the whole series); none without those columns."""
    if "series_id" not in catalog or "episode" not in catalog:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    eps = pd.DataFrame(
        {
            "series": catalog["series_id"].to_numpy(),
            "episode": catalog["episode"].to_numpy(),
            "row": np.arange(len(catalog)),
        }
    ).dropna(subset=["series", "episode"])
    eps["episode"] = eps["episode"].astype(np.int64)
    later = eps.assign(episode=eps["episode"] - 1)  # each episode under its predecessor's number
    pairs = eps.merge(later, on=["series", "episode"], suffixes=("", "_next"))
    return pairs["row"].to_numpy(), pairs["row_next"].to_numpy()
