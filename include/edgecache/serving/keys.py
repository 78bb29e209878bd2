"""The Redis key scheme.

| key                          | type   | holds                                                            |
| ---------------------------- | ------ | ---------------------------------------------------------------- |
| ``user:<user_id>``           | string | the viewer's top predicted content id (the seed's key)           |
| ``user:<user_id>:topk``      | string | JSON list of the viewer's ranked content ids                     |
| ``edge:{<edge>}:cache``      | zset   | the titles the edge cache holds, score = their pred value        |
| ``edge:{<edge>}:cache:<r>``  | zset   | the same titles, score = their value under counting ranking r    |
| ``edge:{<edge>}:rank:<r>``   | zset   | every title ranking r (pred or a counting one) knows, its value  |
| ``edge:{<edge>}:sizes``      | hash   | content id -> bytes, for the titles the cache holds              |
| ``edge:{<edge>}:meta``       | hash   | date, t0, titles and bytes used; request clock, rankings' scores |
| ``edge:{<edge>}:prior``      | zset   | content id -> expected requests tomorrow (edge demand)           |
| ``edge:{<edge>}:trans``      | hash   | content id -> JSON list of the titles watched next               |
| ``edgecache:catalog``        | hash   | content id -> "<bytes> <next episode id or ->"                   |
| ``edgecache:last_warm``      | hash   | date and counts of the last completed warm                       |

The nightly warm loads each edge cache with its prefetch set and the pred ranking with the
predicted titles; during the day the delivery path (``edgecache.serving.delivery``) admits and
evicts titles. Rankings value every title (see ``edgecache.serving.admission``): pred,
``ln(expected requests + eps) + (t - t0) / tau``, and the counting rankings (slow, medium,
fast, recent), request counts that decay at four speeds. The ranking that has lately had
the requested titles nearest its top leads, and under it the lowest cached title is
evicted first.

An edge's warm marker is the pair ``date`` and ``t0`` in its meta hash: the warm writes both in
the same MULTI/EXEC that replaces the edge's keys, last, and nothing else writes them (the
delivery path refuses to decide for an edge whose meta lacks ``t0``, so it never makes a
meta that looks warm). No marker means the edge's warm is missing, whatever other keys
are left: Redis lost it, it expired, or no warm ran yet.

The braces are Redis Cluster hash tags: every key of one edge lands in the same slot, so an
edge's cache can be replaced in one MULTI/EXEC transaction. Every key expires (the TTL is a
setting) so predictions that are no longer refreshed do not serve for ever.
"""

from __future__ import annotations

from edgecache.schema import is_valid_id

LAST_WARM_KEY = "edgecache:last_warm"
CATALOG_KEY = "edgecache:catalog"
USER_PREFIX, TOPK_SUFFIX = "user:", ":topk"  # for writers that check ids in bulk first
WARM_MARKER_FIELDS = ("date", "t0")  # of an edge's meta: present exactly when the edge is warm


def _checked(kind: str, value: str) -> str:
    if not isinstance(value, str) or not is_valid_id(value):
        raise ValueError(f"invalid {kind} id {value!r}: ids are 1-64 of A-Z a-z 0-9 _ -")
    return value


def user_key(user_id: str) -> str:
    return f"{USER_PREFIX}{_checked('user', user_id)}"


def user_topk_key(user_id: str) -> str:
    return f"{USER_PREFIX}{_checked('user', user_id)}{TOPK_SUFFIX}"


def _edge_key(edge_id: str, part: str) -> str:
    return f"edge:{{{_checked('edge', edge_id)}}}:{part}"


def _ranking(name: str) -> str:
    if not isinstance(name, str) or not name.isascii() or not name.isalpha() or not name.islower():
        raise ValueError(f"invalid ranking name {name!r}: lower-case letters only")
    return name


def edge_cache_key(edge_id: str, ranking: str = "pred") -> str:
    """The cached titles, valued by ``ranking`` (the plain cache key holds the pred values)."""
    return _edge_key(edge_id, "cache" if _ranking(ranking) == "pred" else f"cache:{ranking}")


def edge_rank_key(edge_id: str, ranking: str) -> str:
    """Every title ``ranking`` (``edgecache.serving.admission.RANKINGS``) knows, with its value."""
    return _edge_key(edge_id, f"rank:{_ranking(ranking)}")


def edge_meta_key(edge_id: str) -> str:
    return _edge_key(edge_id, "meta")


def edge_sizes_key(edge_id: str) -> str:
    return _edge_key(edge_id, "sizes")


def edge_prior_key(edge_id: str) -> str:
    return _edge_key(edge_id, "prior")


def edge_rewarm_key(edge_id: str) -> str:
    """Held while one process re-warms the edge (the workers of a service share the edge)."""
    return _edge_key(edge_id, "rewarm")


def edge_transitions_key(edge_id: str) -> str:
    return _edge_key(edge_id, "trans")
