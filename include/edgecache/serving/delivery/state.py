"""What the delivery path knows besides the cache itself, read from Redis.

The nightly warm writes, next to the predictions, the catalog (each title's size and next
episode), each edge's transitions (which titles its viewers watched after which) and each
edge's expected demand. An edge service reads them once per warm and keeps them in
memory: they change once a night, and a miss must not cost extra round trips to re-read
them. With them a fresh prediction needs no Spark job.

Whether an edge is warm at all is its warm marker (``edgecache.serving.keys``): the ``date`` and
``t0`` of its meta hash, which only the warm writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from edgecache.serving.keys import CATALOG_KEY, WARM_MARKER_FIELDS, edge_meta_key, edge_prior_key, edge_transitions_key
from edgecache.serving.redis_conn import Client

NO_NEXT = "-"  # the catalog's "no next episode"
POPULAR_N = 50  # how many of the edge's most expected titles a fallback may draw on


@dataclass(frozen=True)
class Title:
    size: int  # bytes
    next_id: str | None  # the series' next episode


@dataclass
class EdgeState:
    """One edge's read-only view of the last warm."""

    edge_id: str
    warm_date: str | None = None  # None: never warmed (or Redis was empty)
    catalog: dict[str, Title] = field(default_factory=dict)
    transitions: dict[str, list[str]] = field(default_factory=dict)
    popular: list[str] = field(default_factory=list)  # most expected titles first

    def predict(self, title: str, k: int) -> list[str]:
        """A viewer who just asked for ``title`` at this edge: the ``k`` titles they are
        likeliest to ask for next. The series' next episode first, then what this edge's
        viewers watched after ``title`` (most often first), then the edge's most expected
        titles; never ``title`` itself, no repeats."""
        out: list[str] = []
        seen = {title}

        def take(ids: list[str]) -> bool:
            for c in ids:
                if c not in seen:
                    seen.add(c)
                    out.append(c)
                    if len(out) == k:
                        return True
            return False

        t = self.catalog.get(title)
        nxt = [t.next_id] if t is not None and t.next_id else []
        take(nxt) or take(self.transitions.get(title, [])) or take(self.popular)
        return out


def parse_catalog_entry(raw: str) -> Title:
    size, nxt = raw.split(" ", 1)
    return Title(int(size), None if nxt == NO_NEXT else nxt)


def format_catalog_entry(size: int, next_id: str | None) -> str:
    return f"{int(size)} {next_id or NO_NEXT}"


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def warm_date(client: Client, edge_id: str) -> str | None:
    """The date of the warm the edge's state comes from (None: not warmed)."""
    raw = client.hget(edge_meta_key(edge_id), "date")
    return None if raw is None else _text(raw)


@dataclass(frozen=True)
class WarmMarker:
    """What the warm left to say an edge is warm: the logical date and the day's start."""

    date: str
    t0: int  # Unix seconds


def warm_markers(client: Client, edges: list[str]) -> dict[str, WarmMarker | None]:
    """Each edge's warm marker, None where it is missing (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for e in edges:
        pipe.hmget(edge_meta_key(e), WARM_MARKER_FIELDS)
    out: dict[str, WarmMarker | None] = {}
    for e, (date, t0) in zip(edges, pipe.execute()):
        # both or neither: the warm writes them together; half of one is no marker
        out[e] = None if date is None or t0 is None else WarmMarker(_text(date), int(float(_text(t0))))
    return out


def load_state(client: Client, edge_id: str) -> EdgeState:
    """Read one edge's state; empty parts where the warm wrote nothing."""
    pipe = client.pipeline(transaction=False)
    pipe.hget(edge_meta_key(edge_id), "date")
    pipe.hgetall(CATALOG_KEY)
    pipe.hgetall(edge_transitions_key(edge_id))
    pipe.zrevrange(edge_prior_key(edge_id), 0, POPULAR_N - 1)
    date, catalog, transitions, popular = pipe.execute()
    return EdgeState(
        edge_id=edge_id,
        warm_date=None if date is None else _text(date),
        catalog={_text(c): parse_catalog_entry(_text(v)) for c, v in catalog.items()},
        transitions={_text(c): json.loads(v) for c, v in transitions.items()},
        popular=[_text(c) for c in popular],
    )
