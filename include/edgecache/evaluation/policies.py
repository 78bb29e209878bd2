"""Cache policies behind one interface: ``hit_ratios(name, trace, capacity, ranking)``.

A trace is one cache's requests in order. Capacity and sizes share one unit: titles
(every size 1) or bytes. The static policies (``predictive``, ``oracle``) are set
look-ups in numpy; the classic policies run in libCacheSim, on the trace written once
in its ``oracleGeneral`` binary layout, the only layout whose reader carries the next
access that Belady needs (its CSV reader drops it silently). ``predictive+admission``
is our own, one request at a time in a numba kernel (see ``_admission_replay`` and the
comment above ``ADMISSION_TAU`` in ``edgecache.serving.admission``).

    hits = hit_ratios("LRU", trace, capacity=20)
    hits.object_hit_ratio, hits.byte_hit_ratio
"""

from __future__ import annotations

import heapq
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgecache.serving.admission import (
    ADMISSION_BOOST,
    ADMISSION_COUNTS,
    ADMISSION_EPS,
    ADMISSION_MEMORY,
    ADMISSION_SEQUEL,
    ADMISSION_TAU,
    ADMISSION_UNASKED,
    LEAD_ORDER,
)

# libCacheSim's oracleGeneral record, little-endian and packed (24 bytes).
ORACLE_DTYPE = np.dtype([("timestamp", "<u4"), ("obj_id", "<u8"), ("size", "<u4"), ("next_access", "<i8")])
MAX_SIZE = np.iinfo(np.uint32).max
S3FIFO_SMALL_RATIO = 0.1  # the S3-FIFO paper's small queue
S3FIFO_MAX_SMALL_RATIO = 0.5


@dataclass(frozen=True, eq=False)  # arrays: compare contents explicitly
class Trace:
    """One cache's requests in replay order.

    ``size`` is what an object takes in the cache, in the unit capacities are given in.
    ``unit_size`` counts every object as 1 (a cache sized in titles) while ``size`` and
    the file keep the real sizes. ``file`` is the same requests in oracleGeneral layout.
    """

    obj_id: np.ndarray  # uint64, > 0
    size: np.ndarray  # int64, 1 .. 2**32 - 1
    timestamp: np.ndarray  # int64 seconds, non-decreasing
    unit_size: bool = False
    file: Path | None = None
    n_objects: int = 0  # distinct objects, known once the file is written
    memo: dict = field(default_factory=dict, compare=False, repr=False)  # shared by in_titles()

    def __post_init__(self) -> None:
        n = len(self.obj_id)
        if len(self.size) != n or len(self.timestamp) != n:
            raise ValueError("obj_id, size and timestamp must have the same length")
        if n and (self.obj_id.min() < 1 or self.size.min() < 1 or self.size.max() > MAX_SIZE):
            raise ValueError("obj_id must be positive and size within 1 .. 2**32 - 1")

    def __len__(self) -> int:
        return len(self.obj_id)

    def in_titles(self) -> Trace:
        """The same requests, every object counting as one title."""
        return replace(self, unit_size=True)

    @property
    def sizes(self) -> np.ndarray:
        """Per-request size in the capacity's unit."""
        return np.ones(len(self), dtype=np.int64) if self.unit_size else self.size.astype(np.int64)

    @property
    def total_size(self) -> int:
        return len(self) if self.unit_size else int(self.size.sum(dtype=np.int64))

    def with_file(self, path: Path) -> Trace:
        """Write the oracleGeneral file once; every libCacheSim policy reads it."""
        rec = oracle_records(self.obj_id, self.size, self.timestamp)
        rec.tofile(path)
        # every object's first request is nobody's next one
        return replace(self, file=path, n_objects=len(self) - int((rec["next_access"] >= 0).sum()))


@dataclass(frozen=True)
class Hits:
    """Request and hit counts of one replay (object and size-weighted)."""

    requests: int
    hits: int
    bytes: int
    bytes_hit: int

    def __add__(self, other: Hits) -> Hits:
        return Hits(
            self.requests + other.requests,
            self.hits + other.hits,
            self.bytes + other.bytes,
            self.bytes_hit + other.bytes_hit,
        )

    @property
    def object_hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def byte_hit_ratio(self) -> float:
        return self.bytes_hit / self.bytes if self.bytes else 0.0


NO_HITS = Hits(0, 0, 0, 0)


def next_access(obj_id: np.ndarray) -> np.ndarray:
    """Index of the next request for the same object, or -1: what Belady looks ahead with."""
    n = len(obj_id)
    order = np.lexsort((np.arange(n), obj_id))  # by object, then by position
    nxt = np.full(n, -1, dtype=np.int64)
    same = obj_id[order[1:]] == obj_id[order[:-1]]
    nxt[order[:-1][same]] = order[1:][same]
    return nxt


def oracle_records(obj_id: np.ndarray, size: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    rec = np.empty(len(obj_id), dtype=ORACLE_DTYPE)
    rec["timestamp"] = timestamp
    rec["obj_id"] = obj_id
    rec["size"] = size
    rec["next_access"] = next_access(np.asarray(obj_id, dtype=np.uint64))
    return rec


def fit_prefix(sizes: np.ndarray, capacity: int) -> int:
    """How many leading items of a ranking fit in ``capacity`` (stops at the first that does not)."""
    fits = np.cumsum(sizes, dtype=np.int64) <= capacity
    return int(np.argmin(fits)) if not fits.all() else len(sizes)


def static_hits(trace: Trace, members: np.ndarray) -> Hits:
    """Hits of a cache that holds ``members`` all day and admits nothing."""
    top = int(trace.obj_id.max())
    if top <= 1 << 26:  # a lookup table beats np.isin's sort on long traces
        table = np.zeros(top + 1, dtype=bool)
        table[members[members <= top].astype(np.int64)] = True
        hit = table[trace.obj_id.astype(np.int64)]
    else:
        hit = np.isin(trace.obj_id, members)
    sizes = trace.sizes
    return Hits(len(trace), int(hit.sum()), int(sizes.sum()), int(sizes[hit].sum()))


@dataclass(frozen=True, eq=False)  # arrays: compare contents explicitly
class Sequels:
    """The catalog's next-episode links: ``next_id[i]`` follows ``obj_id[i]`` (0: none).

    ``obj_id`` is sorted and covers every title, so the size of a next episode nobody has
    asked for yet is known.
    """

    obj_id: np.ndarray  # uint64, sorted
    size: np.ndarray  # int64, real sizes
    next_id: np.ndarray  # uint64, 0 where the title is a movie or a series' last episode

    def __post_init__(self) -> None:
        if not len(self.obj_id) == len(self.size) == len(self.next_id):
            raise ValueError("obj_id, size and next_id must have the same length")


@dataclass(frozen=True, eq=False)  # arrays: compare contents explicitly
class Ranking:
    """Objects best first, with their real sizes (what a static cache loads from the top).

    ``score`` is each object's predicted requests for the replayed day (the prior of
    ``predictive+admission``); without it the ranking counts as scores n, n-1, ..., 1.
    ``sequels`` are the catalog's next-episode links.
    """

    obj_id: np.ndarray
    size: np.ndarray
    score: np.ndarray | None = None
    sequels: Sequels | None = None

    def __post_init__(self) -> None:
        if len(self.obj_id) != len(self.size):
            raise ValueError("obj_id and size must have the same length")
        if self.score is not None and len(self.score) != len(self.obj_id):
            raise ValueError("score and obj_id must have the same length")

    @property
    def scores(self) -> np.ndarray:
        if self.score is not None:
            return self.score.astype(np.float64)
        return np.arange(len(self.obj_id), 0, -1, dtype=np.float64)

    def top(self, capacity: int, unit_size: bool) -> Ranking:
        """The top of the ranking that fits in ``capacity``."""
        sizes = np.ones(len(self.obj_id), dtype=np.int64) if unit_size else self.size
        k = fit_prefix(sizes, capacity)
        return Ranking(self.obj_id[:k], self.size[:k], None if self.score is None else self.score[:k], self.sequels)


def oracle_ranking(trace: Trace) -> Ranking:
    """Objects by their request count in the trace, most requested first (ties: lower id)."""
    if "oracle" not in trace.memo:
        ids, first, counts = np.unique(trace.obj_id, return_index=True, return_counts=True)
        order = np.lexsort((ids, -counts))
        trace.memo["oracle"] = Ranking(ids[order], trace.size[first[order]])
    return trace.memo["oracle"]


# --- the registry ---------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    name: str
    kind: str  # "static" (numpy), "libcachesim" or "numba" (our own kernel)
    online: bool  # decides from the past only, starting from an empty cache
    needs_ranking: bool = False
    doc: str = ""
    lcs_class: str = ""  # libcachesim class name
    warm: bool = False  # starts with the ranking's prefetch set


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy(
            "predictive",
            "static",
            online=False,
            needs_ranking=True,
            doc="the predicted prefetch set, held all day, no admission",
        ),
        Policy(
            "predictive+admission",
            "numba",
            online=False,
            needs_ranking=True,
            warm=True,
            doc=(
                "starts with the prefetch set; five rankings of the titles (the prediction decaying "
                "since each title's last request, and request counts decaying at four speeds, the "
                "fastest the last request only) each score a point when a request is among their "
                "top as many titles as the cache holds; the leading ranking admits a missed title "
                "(and a requested episode's next episode) only if it outranks every title it would "
                "evict, lowest first"
            ),
        ),
        Policy("LRU", "libcachesim", online=True, lcs_class="LRU", doc="least recently used, from empty"),
        Policy("LFU", "libcachesim", online=True, lcs_class="LFU", doc="least frequently used, from empty"),
        Policy(
            "S3-FIFO",
            "libcachesim",
            online=True,
            lcs_class="S3FIFO",
            doc="small, main and ghost FIFO queues, from empty",
        ),
        Policy("SIEVE", "libcachesim", online=True, lcs_class="Sieve", doc="SIEVE, from empty"),
        Policy(
            "Belady",
            "libcachesim",
            online=False,
            lcs_class="Belady",
            doc="evicts the object requested furthest in the future (needs the whole trace)",
        ),
        Policy(
            "oracle", "static", online=False, doc="each cache's most requested titles of the replayed day, held all day"
        ),
    )
}


def s3fifo_small_ratio(max_size: int, capacity: int) -> float | None:
    """Small-queue share for S3-FIFO, or None where S3-FIFO cannot work at this capacity.

    libCacheSim's S3-FIFO never admits an object at least as large as its small queue, so
    at 10 % the small queue of a cache of a few titles admits nothing and the policy
    scores zero. The queue grows to just hold the largest object, up to half the cache.
    """
    small = max(int(capacity * S3FIFO_SMALL_RATIO), max_size + 1)
    if small > capacity * S3FIFO_MAX_SMALL_RATIO:
        return None
    if small == int(capacity * S3FIFO_SMALL_RATIO):
        return S3FIFO_SMALL_RATIO
    # libCacheSim truncates capacity * ratio: aim at the middle of the wanted integer.
    return (small + 0.5) / capacity


@dataclass(frozen=True, eq=False)  # arrays: compare contents explicitly
class Replay:
    """One libCacheSim run, small enough to ship to a worker process."""

    lcs_class: str
    file: str
    unit_size: bool
    capacity: int
    requests: int
    bytes: int
    n_objects: int
    warm: np.ndarray | None = None  # object ids to load first, least recent first
    warm_sizes: np.ndarray | None = None
    params: dict = field(default_factory=dict)


def _hashpower(n_objects: int) -> int:
    # libCacheSim's default (2**24 buckets) costs more to allocate than a day's replay.
    return min(24, max(4, math.ceil(math.log2(n_objects + 1)) + 1))


def run_replay(job: Replay) -> Hits:
    """Run one libCacheSim replay and return its counts (the warm-up is not counted)."""
    import libcachesim as lcs

    params = lcs.ReaderInitParam(ignore_obj_size=job.unit_size)
    cache = getattr(lcs, job.lcs_class)(job.capacity, hashpower=_hashpower(job.n_objects), **job.params)
    if job.warm is not None and len(job.warm):
        with tempfile.TemporaryDirectory(prefix="edgecache-warm-") as tmp:
            path = Path(tmp) / "warm.oracleGeneral"
            assert job.warm_sizes is not None, "warm ids come with their sizes"
            rec = oracle_records(job.warm, job.warm_sizes, np.zeros(len(job.warm), dtype=np.int64))
            rec["next_access"] = -1
            rec.tofile(path)
            cache.process_trace(lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE, params))
    reader = lcs.TraceReader(job.file, lcs.TraceType.ORACLE_GENERAL_TRACE, params)
    obj_miss, byte_miss = cache.process_trace(reader)
    # libCacheSim returns ratios of exact integer counts: recover the counts.
    return Hits(job.requests, round((1.0 - obj_miss) * job.requests), job.bytes, round((1.0 - byte_miss) * job.bytes))


# --- predictive admission ---------------------------------------------------------------
#
# The rule and its constants are the serving side's (edgecache.serving.admission): the
# edge service runs it live, the replay below runs the same rule over a day's trace.

SECONDS_PER_DAY = 86400


@dataclass(frozen=True, eq=False)  # arrays: compare contents explicitly
class AdmissionReplay:
    """One ``predictive+admission`` run, small enough to ship to a worker process (the
    requests are read back from the trace's oracleGeneral file)."""

    file: str
    unit_size: bool
    capacity: int
    requests: int
    bytes: int
    warm: np.ndarray  # object ids cached at the start
    prior_id: np.ndarray  # the ranked objects (pred knows them from the start)
    prior: np.ndarray  # their scores
    sequels: Sequels | None
    tau: float = ADMISSION_TAU
    boost: float = ADMISSION_BOOST
    counts: tuple[tuple[str, float], ...] = ADMISSION_COUNTS
    sequel: float = ADMISSION_SEQUEL
    memory: float = ADMISSION_MEMORY
    lead: tuple[str, ...] = LEAD_ORDER  # the rankings that may lead, first the one that leads on ties


def _dense(ids: np.ndarray, parts: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray], int]:
    """``ids`` and each of ``parts`` as indices 0..n-1 in one space that keeps the ids' order."""
    everything = np.concatenate([np.asarray(ids, dtype=np.uint64), *(np.asarray(p, dtype=np.uint64) for p in parts)])
    top = int(everything.max()) if len(everything) else 0
    if top <= 1 << 24:  # small ids index arrays directly
        dense, n = everything.astype(np.int64), top + 1
    else:
        uniq, dense = np.unique(everything, return_inverse=True)
        dense, n = dense.astype(np.int64), len(uniq)
    bounds = np.cumsum([len(ids), *(len(p) for p in parts)])
    return dense[: bounds[0]], [dense[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])], n


def run_admission(job: AdmissionReplay) -> Hits:
    """Replay one trace through ``predictive+admission`` (see the comment above)."""
    rec = np.fromfile(job.file, dtype=ORACLE_DTYPE)
    seq = job.sequels
    empty = np.array([], dtype=np.uint64)
    links = seq.next_id > 0 if seq is not None else np.array([], dtype=bool)
    parts = [job.warm, job.prior_id, empty, empty, empty]
    if seq is not None:
        parts[2:] = [seq.obj_id, seq.obj_id[links], seq.next_id[links]]
    req, (warm, prior_id, seq_id, link_from, link_to), n = _dense(rec["obj_id"], parts)
    size_of = np.ones(n, dtype=np.int64)
    if not job.unit_size:
        if seq is not None:
            size_of[seq_id] = seq.size
        size_of[req] = rec["size"]
    prior = np.zeros(n, dtype=np.float64)
    prior[prior_id] = job.prior
    ranked = np.zeros(n, dtype=np.bool_)
    ranked[prior_id] = True
    nxt = np.full(n, -1, dtype=np.int64)
    nxt[link_from] = link_to
    ts = rec["timestamp"].astype(np.float64)
    t0 = float(int(ts[0]) // SECONDS_PER_DAY * SECONDS_PER_DAY) if len(ts) else 0.0
    names = ["pred", *(name for name, _ in job.counts)]
    hits, size_hit = admission_kernel()(
        req,
        ts,
        size_of,
        prior,
        ranked,
        nxt,
        warm,
        job.capacity,
        t0,
        job.tau,
        job.boost,
        ADMISSION_EPS,
        np.array([m for _, m in job.counts], dtype=np.float64),
        job.sequel,
        job.memory,
        ADMISSION_UNASKED,
        np.array([names.index(name) for name in job.lead], dtype=np.int64),
    )
    return Hits(job.requests, int(hits), job.bytes, int(size_hit))


def _admission_replay(
    req,
    ts,
    size_of,
    prior,
    ranked,
    nxt,
    warm,
    capacity,
    t0,
    tau,
    boost,
    eps,  # noqa: ANN001, ANN202, C901
    counts,
    sequel,
    memory,
    unasked,
    lead_order,
):
    """The per-request loop (numba-compiled by ``admission_kernel``): hits and size hit.

    Binary heaps with lazy deletion stand in for the sorted sets (an entry is live while
    it holds the title's current value): per ranking, the cached titles (lowest first, for
    evictions), and the titles it knows split into its top n (lowest first) and the rest
    (highest first), which answers "is x among the top n" as Redis's ZREVRANK does.
    Values only ever grow, so the split moves a title at a time.
    """
    n = len(prior)
    k = len(counts) + 1  # rankings: 0 pred, then the counting ones
    value = np.full((k, n), -np.inf)
    known = np.zeros((k, n), dtype=np.bool_)  # in the ranking's sorted set of every title
    intop = np.zeros((k, n), dtype=np.bool_)
    cached = np.zeros(n, dtype=np.bool_)
    entry = (0.0, np.int64(0))
    top: list[list[tuple[Any, Any]]] = [[entry] for _ in range(k)]  # (value, id), lowest first
    rest: list[list[tuple[Any, Any]]] = [[entry] for _ in range(k)]  # (-value, -id), highest first
    low = [[entry] for _ in range(k)]  # cached titles, (value, id), lowest first
    for e in range(k):
        top[e].pop()
        rest[e].pop()
        low[e].pop()
    for i in range(n):
        if ranked[i]:
            value[0, i] = np.log(prior[i] + eps)
            known[0, i] = True
            rest[0].append((-value[0, i], -np.int64(i)))
    used, count = 0, 0
    for w in warm:
        if not cached[w] and used + size_of[w] <= capacity:
            if not known[0, w]:
                value[0, w] = np.log(prior[w] + eps)
                known[0, w] = True
                rest[0].append((-value[0, w], -w))
            for e in range(1, k):
                value[e, w] = value[0, w] - unasked
            cached[w] = True
            used += size_of[w]
            count += 1
            for e in range(k):
                low[e].append((value[e, w], w))
    for e in range(k):
        heapq.heapify(rest[e])
        heapq.heapify(low[e])
    ntop = np.zeros(k, dtype=np.int64)
    score = np.zeros(k)
    clock_at = np.zeros(k)
    new = np.zeros(k)
    victims = np.empty(max(n, 1), dtype=np.int64)
    hits, size_hit, clock = 0, 0, 0
    for r in range(len(req)):
        x = req[r]
        # every ranking's top holds as many titles as the cache: move titles across the split
        for e in range(k):
            tp, rs = top[e], rest[e]
            while True:
                while len(tp) and not (intop[e, tp[0][1]] and value[e, tp[0][1]] == tp[0][0]):
                    heapq.heappop(tp)
                while len(rs) and (intop[e, -rs[0][1]] or value[e, -rs[0][1]] != -rs[0][0]):
                    heapq.heappop(rs)
                if ntop[e] > count:
                    v, i = heapq.heappop(tp)
                    intop[e, i] = False
                    ntop[e] -= 1
                    heapq.heappush(rs, (-v, -i))
                elif ntop[e] < count and len(rs):
                    v, i = heapq.heappop(rs)
                    intop[e, -i] = True
                    ntop[e] += 1
                    heapq.heappush(tp, (-v, -i))
                elif len(tp) and len(rs) and (-rs[0][0] > tp[0][0] or (-rs[0][0] == tp[0][0] and -rs[0][1] > tp[0][1])):
                    v, i = heapq.heappop(rs)
                    v2, i2 = heapq.heappop(tp)
                    intop[e, -i] = True
                    intop[e, i2] = False
                    heapq.heappush(tp, (-v, -i))
                    heapq.heappush(rs, (-v2, -i2))
                else:
                    break
        for e in range(k):
            score[e] = score[e] * memory + (1.0 if intop[e, x] else 0.0)
        lead = lead_order[0]
        for j in range(1, len(lead_order)):
            if score[lead_order[j]] > score[lead]:
                lead = lead_order[j]
        clock += size_of[x]
        u = (ts[r] - t0) / tau
        for e in range(1, k):
            clock_at[e] = clock / (counts[e - 1] * capacity) if counts[e - 1] > 0 else clock / capacity
        for step in range(2):
            if step == 0:
                y = x
                new[0] = np.log(prior[y] + eps) + u
                add = 0.0
            else:
                y = nxt[x]
                if y < 0:
                    break
                new[0] = max(value[0, y], np.log(prior[y] + boost + eps) + u)
                add = np.log(sequel)
            for e in range(1, k):  # as the Lua script computes them, so both round alike
                a, b = value[e, y], add + clock_at[e]
                if counts[e - 1] == 0 or a == -np.inf:
                    new[e] = max(a, b)
                elif a >= b:
                    new[e] = a + np.log(1.0 + np.exp(b - a))
                else:
                    new[e] = b + np.log(1.0 + np.exp(a - b))
            for e in range(k):
                if new[e] != value[e, y] or not known[e, y]:
                    value[e, y] = new[e]
                    known[e, y] = True
                    if intop[e, y]:
                        heapq.heappush(top[e], (new[e], y))
                    else:
                        heapq.heappush(rest[e], (-new[e], -y))
                    if cached[y]:
                        heapq.heappush(low[e], (new[e], y))
            if cached[y]:
                if step == 0:
                    hits += 1
                    size_hit += size_of[y]
                continue
            s = size_of[y]
            if s > capacity:
                continue
            c, lo = value[lead, y], low[lead]
            free, nv, ok = capacity - used, 0, True
            while free < s:
                while len(lo) and not (cached[lo[0][1]] and value[lead, lo[0][1]] == lo[0][0]):
                    heapq.heappop(lo)
                if len(lo) == 0 or not (lo[0][0] < c or (lo[0][0] == c and lo[0][1] < y)):
                    ok = False
                    break
                v = heapq.heappop(lo)[1]
                cached[v] = False  # tentatively: a duplicate heap entry must not count twice
                victims[nv] = v
                nv += 1
                free += size_of[v]
            if not ok:
                for j in range(nv):
                    cached[victims[j]] = True
                    heapq.heappush(lo, (value[lead, victims[j]], victims[j]))
                continue
            for j in range(nv):
                used -= size_of[victims[j]]
            count += 1 - nv
            cached[y] = True
            used += s
            for e in range(k):
                heapq.heappush(low[e], (value[e, y], y))
        for e in range(k):  # drop dead entries now and then
            if len(low[e]) > 4 * count + 1024:
                low[e].clear()
                for i in range(n):
                    if cached[i]:
                        low[e].append((value[e, i], np.int64(i)))
                heapq.heapify(low[e])
            if len(top[e]) + len(rest[e]) > 4 * n + 1024:
                top[e].clear()
                rest[e].clear()
                for i in range(n):
                    if intop[e, i]:
                        top[e].append((value[e, i], np.int64(i)))
                    elif known[e, i]:
                        rest[e].append((-value[e, i], -np.int64(i)))
                heapq.heapify(top[e])
                heapq.heapify(rest[e])
    return hits, size_hit


_KERNEL: list = []


def admission_kernel() -> Callable:
    """``_admission_replay`` compiled by numba (once per process; cached on disk)."""
    if not _KERNEL:
        import numba

        _KERNEL.append(numba.njit(cache=True)(_admission_replay))
    return _KERNEL[0]


Step = Replay | AdmissionReplay
STEPS = (Replay, AdmissionReplay)


class Job(NamedTuple):
    """One replay: policy ``name`` on ``trace`` at ``capacity``.

    ``max_size`` is the largest object any cache of the comparison may see (default: the
    trace's); S3-FIFO sizes its small queue by it, so that every cache of one comparison
    runs the same S3-FIFO.
    """

    name: str
    trace: Trace
    capacity: int
    ranking: Ranking | None = None
    max_size: int | None = None


def plan(
    name: str, trace: Trace, capacity: int, ranking: Ranking | None = None, max_size: int | None = None
) -> Step | Hits | None:
    """Either the Hits (static policies), a replay to run (libCacheSim or our kernel), or
    None where the policy does not work at this capacity."""
    policy = POLICIES[name]
    if policy.needs_ranking and ranking is None:
        raise ValueError(f"policy {name} needs a ranking")
    if capacity < 0:
        raise ValueError(f"capacity must not be negative, got {capacity}")
    if len(trace) == 0:
        return NO_HITS
    if policy.kind == "static":
        ranked = ranking if name == "predictive" and ranking is not None else oracle_ranking(trace)
        return static_hits(trace, ranked.top(capacity, trace.unit_size).obj_id)
    if trace.file is None:
        raise ValueError("replayed policies read the trace's oracleGeneral file: use Trace.with_file")
    if policy.kind == "numba":
        assert ranking is not None, "admission by ranking needs one"
        top = ranking.top(capacity, trace.unit_size)
        return AdmissionReplay(
            str(trace.file),
            trace.unit_size,
            capacity,
            len(trace),
            trace.total_size,
            top.obj_id,
            ranking.obj_id,
            ranking.scores,
            ranking.sequels,
        )
    params: dict = {}
    if policy.lcs_class == "S3FIFO":
        largest = 1 if trace.unit_size else int(trace.size.max() if max_size is None else max_size)
        ratio = s3fifo_small_ratio(largest, capacity)
        if ratio is None:
            return None
        params = {"small_size_ratio": ratio}
    warm = warm_sizes = None
    if policy.warm:
        assert ranking is not None, "a warm start from the ranking needs one"
        top = ranking.top(capacity, trace.unit_size)
        warm, warm_sizes = top.obj_id[::-1], top.size[::-1]
    return Replay(
        policy.lcs_class,
        str(trace.file),
        trace.unit_size,
        capacity,
        len(trace),
        trace.total_size,
        trace.n_objects,
        warm,
        warm_sizes,
        params,
    )


def hit_ratios(
    name: str, trace: Trace, capacity: int, ranking: Ranking | None = None, max_size: int | None = None
) -> Hits | None:
    """Replay ``trace`` through policy ``name`` at ``capacity``; None where the policy does not apply.

    ``ranking`` is the prediction the ``predictive`` policies load from the top.
    libCacheSim policies need ``trace.file`` (``Trace.with_file``); a temporary one is
    written when it is missing.
    """
    if POLICIES[name].kind in ("libcachesim", "numba") and trace.file is None and len(trace):
        with tempfile.TemporaryDirectory(prefix="edgecache-trace-") as tmp:
            return hit_ratios(name, trace.with_file(Path(tmp) / "trace.oracleGeneral"), capacity, ranking, max_size)
    step = plan(name, trace, capacity, ranking, max_size)
    return run_step(step) if isinstance(step, STEPS) else step


def run_step(step: Step) -> Hits:
    """Run one replay, in libCacheSim or in our kernel."""
    return run_admission(step) if isinstance(step, AdmissionReplay) else run_replay(step)


def hit_ratios_many(jobs: Sequence[Job], workers: int = 1, run: Callable[[Step], Hits] = run_step) -> list[Hits | None]:
    """``hit_ratios`` for many jobs at once (traces already written), the replays spread
    over ``workers`` processes (libCacheSim holds the GIL while it replays)."""
    steps = [plan(*job) for job in jobs]
    replays = [(i, s) for i, s in enumerate(steps) if isinstance(s, STEPS)]
    out: list[Hits | None] = [s if not isinstance(s, STEPS) else None for s in steps]
    if workers > 1 and len(replays) > 1:
        # spawn: the parent may hold a JVM (Spark's driver), which must not be forked.
        with ProcessPoolExecutor(min(workers, len(replays)), mp_context=get_context("spawn")) as pool:
            # longest first keeps both workers busy to the end
            order = sorted(replays, key=lambda r: -r[1].requests)
            for (i, _), hits in zip(order, pool.map(run, [r for _, r in order])):
                out[i] = hits
    else:
        for i, r in replays:
            out[i] = run(r)
    return out


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
