"""The Redis key scheme.

| key                      | type   | holds                                                   |
| ------------------------ | ------ | ------------------------------------------------------- |
| ``user:<user_id>``       | string | the viewer's top predicted content id (the seed's key)  |
| ``user:<user_id>:topk``  | string | JSON list of the viewer's ranked content ids            |
| ``edge:{<edge>}:cache``  | zset   | the edge's prefetched content ids, score = rank         |
| ``edge:{<edge>}:meta``   | hash   | date and size of the edge's warmed cache                |
| ``edgecache:last_warm``  | hash   | date and counts of the last completed warm              |

The braces are Redis Cluster hash tags: every key of one edge lands in the same slot, so an
edge's cache can be replaced in one MULTI/EXEC transaction. Every key expires (the TTL is a
setting) so predictions that are no longer refreshed do not serve for ever.
"""

from __future__ import annotations

from edgecache.schema import is_valid_id

LAST_WARM_KEY = "edgecache:last_warm"


def _checked(kind: str, value: str) -> str:
    if not isinstance(value, str) or not is_valid_id(value):
        raise ValueError(f"invalid {kind} id {value!r}: ids are 1-64 of A-Z a-z 0-9 _ -")
    return value


def user_key(user_id: str) -> str:
    return f"user:{_checked('user', user_id)}"


def user_topk_key(user_id: str) -> str:
    return f"user:{_checked('user', user_id)}:topk"


def edge_cache_key(edge_id: str) -> str:
    return f"edge:{{{_checked('edge', edge_id)}}}:cache"


def edge_meta_key(edge_id: str) -> str:
    return f"edge:{{{_checked('edge', edge_id)}}}:meta"
