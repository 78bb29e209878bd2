"""The delivery decision: ``Delivery.deliver(edge, user, title)``.

Hit: the edge cache holds the title; it is served from the edge and its values refreshed.
Miss: it is served from the origin, offered to the edge cache (admitted if it outranks the
titles it would evict under the leading ranking, within the cache's byte capacity) and the
viewer's fresh prediction is written back to ``user:<id>`` and ``user:<id>:topk``. Either
way the title's next episode gets a boost and may be admitted ahead of the request for it.
The leading ranking is the one (the night's prediction, or request counts decaying at four
speeds) that has lately had the requested titles nearest its top, so a useless prediction
is found out within a few hundred requests.

This is the admission rule of ``edgecache.serving.admission`` (whose comment gives the
algorithm; the evaluation replays it as ``predictive+admission``) run against Redis: one
Lua script per request does the look-up, the admission, the evictions and the write-back
atomically, so a decision is one round trip and two edge services never interleave
half-decisions. On a Redis Cluster the viewer's keys are in other slots than the edge's:
the script keeps to the edge's slot and a miss writes the prediction back in a second call.
The fresh prediction is made in process from the warm's state (``edgecache.serving.delivery.state``)
before the script runs, so that a miss needs no second round trip.

When Redis fails, requests are served from the origin (``degraded``), each failed call is
counted, the service reports not ready, and Redis is tried again ``retry_after`` seconds
later: it recovers by itself.

When Redis answers but an edge's warm is gone (a restart without persistence, a flush, an
eviction, or expiry), the script finds no warm marker and writes nothing: the request is
served from the origin (``degraded``, counted as not warm). Deciding anyway would build a
cache, a meta without ``t0`` and values measured from 1970 that look like a warm to every
reader and hide the loss. The service reports the edge not ready and re-warms it from
the newest complete predictions on disk (``Delivery.heal``, run in the background by the
service's ``warm_keeper``), at most once per edge per ``rewarm_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from hashlib import sha1
from pathlib import Path
from typing import Any

import redis

from edgecache.schema import is_valid_id
from edgecache.serving.admission import (
    ADMISSION_BOOST,
    ADMISSION_COUNTS,
    ADMISSION_EPS,
    ADMISSION_MEMORY,
    ADMISSION_SEQUEL,
    ADMISSION_TAU,
    LEAD_ORDER,
    RANKINGS,
)
from edgecache.serving.delivery.metrics import REWARM_OUTCOMES, DeliveryMetrics, default_metrics
from edgecache.serving.delivery.state import EdgeState, load_state, warm_date, warm_markers
from edgecache.serving.keys import (
    TOPK_SUFFIX,
    USER_PREFIX,
    edge_cache_key,
    edge_meta_key,
    edge_prior_key,
    edge_rank_key,
    edge_rewarm_key,
    edge_sizes_key,
    user_key,
    user_topk_key,
)
from edgecache.serving.redis_conn import Client, RedisUnreachableError, check_access, connect, is_cluster, with_timeout

log = logging.getLogger("edgecache.serving.delivery")

ACTIVE_WINDOW = 300.0  # seconds: a viewer is active for five minutes after a request
REWARM_TIMEOUT = 30.0  # seconds: a re-warm's Redis calls may take longer than a decision's
REWARM_CLAIM = 120.0  # seconds: the longest a re-warm's claim on an edge holds if never released
RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# Request times outside these (2000-01-01 .. 2100-01-01 UTC) are refused: a value decays with
# time, so a far-future time would pin a title in the cache for good.
MIN_TIME, MAX_TIME = 946684800.0, 4102444800.0

# KEYS: cache zset (pred values), prior zset, sizes hash, meta hash, the cache under each
#       counting ranking, the ranks of pred and of each counting ranking; then the user key
#       and user top-k key (not on a cluster)
# ARGV: title, size, next episode ("" for none), its size, request time (s), capacity (bytes),
#       tau, boost, eps, ttl, the viewer's fresh top title, their top-k as JSON ("" for none),
#       sequel, score memory, who leads on ties (1-based ranking numbers, pred 1, joined by
#       spaces), then name and memory of each counting ranking
# Returns {hit, admitted, next episode admitted, titles evicted}, or NOT_WARM when the edge
# has no warm marker (then nothing is written).
NOT_WARM = -1
DELIVER_LUA = """
local cache, prior, sizes, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local x, sx, z, sz = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local ts, cap = tonumber(ARGV[5]), tonumber(ARGV[6])
local tau, boost, eps = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local sequel, memory = tonumber(ARGV[13]), tonumber(ARGV[14])
local k = (#ARGV - 15) / 2 + 1
local names, mem, caches, ranks, order = {'pred'}, {}, {cache}, {}, {}
for e = 2, k do
  names[e], mem[e] = ARGV[12 + 2 * e], tonumber(ARGV[13 + 2 * e])
  caches[e] = KEYS[3 + e]
end
for e = 1, k do ranks[e] = KEYS[3 + k + e] end
for e in string.gmatch(ARGV[15], '%d+') do order[#order + 1] = tonumber(e) end
local fields = {'t0', 'used', 'clock'}
for e = 1, k do fields[3 + e] = 'score:' .. names[e] end
local m = redis.call('HMGET', meta, unpack(fields))
-- no t0: the warm is gone (only the warm writes t0, with the date). Write nothing, so no
-- key without a TTL and no meta that looks warm is made; the caller serves from the origin.
if not m[1] then return {-1, 0, 0, 0} end  -- NOT_WARM
local n = redis.call('ZCARD', cache)
-- each ranking scores a point if x is among its top n titles (before x moves them)
local score = {}
for e = 1, k do
  local r = redis.call('ZREVRANK', ranks[e], x)
  score[e] = tonumber(m[3 + e] or '0') * memory + ((r and r < n) and 1 or 0)
end
local lead = order[1]
for j = 2, #order do
  if score[order[j]] > score[lead] then lead = order[j] end
end
local clock0 = tonumber(m[3] or '0')
local clock = clock0 + sx
local t = (ts - tonumber(m[1] or '0')) / tau
local at = {}
for e = 2, k do
  if mem[e] > 0 then at[e] = clock / (mem[e] * cap) else at[e] = clock / cap end
end
local zz = z ~= '' and z or x
local held = redis.call('ZMSCORE', cache, x, zz)
local pri = redis.call('ZMSCORE', prior, x, zz)
local old = {}
for e = 1, k do old[e] = redis.call('ZMSCORE', ranks[e], x, zz) end
local function fmt(v) return string.format('%.17g', v) end
local used0 = tonumber(m[2] or '0')
local used, evicted, gone = used0, 0, {}
local hit, admitted, boosted = 0, 0, 0
-- new values of x and z, and the cached titles whose values the caches under the rankings
-- that do not lead still have to take (written once at the end: only the leader's order
-- matters within this request)
local vals, stale = {}, {}
-- step 1: the title asked for; step 2: its next episode, boosted
for step = 1, 2 do
  local y, sy, j, add, v
  if step == 1 then
    y, sy, j, add = x, sx, 1, 0
    v = {math.log(tonumber(pri[1] or '0') + eps) + t}
  else
    if z == '' then break end
    y, sy, j, add = z, sz, 2, math.log(sequel)
    v = {math.log(tonumber(pri[2] or '0') + boost + eps) + t}
    local p0 = old[1][2] and tonumber(old[1][2])
    if p0 and p0 > v[1] then v[1] = p0 end
  end
  -- the counting rankings add a request: ln(e^a + e^b), or the later of a and b (recent)
  for e = 2, k do
    local a, b = old[e][j] and tonumber(old[e][j]), add + at[e]
    if not a or (mem[e] == 0 and a < b) then v[e] = b
    elseif mem[e] == 0 then v[e] = a
    elseif a >= b then v[e] = a + math.log(1 + math.exp(b - a))
    else v[e] = b + math.log(1 + math.exp(a - b)) end
  end
  vals[j] = v
  local inside = held[j] and not gone[y]
  if inside then
    if step == 1 then hit = 1 end
    redis.call('ZADD', caches[lead], fmt(v[lead]), y)
    stale[y] = v
  elseif sy > 0 and sy <= cap then
    -- admit y if every title it would evict, lowest first under the leader, is below it
    local c, lowest = v[lead], caches[lead]
    local free, victims, start, ok = cap - used, {}, 0, true
    while ok and free < sy do
      local low = redis.call('ZRANGE', lowest, start, start + 7, 'WITHSCORES')
      if #low == 0 then ok = false break end
      local ids = {}
      for i = 1, #low, 2 do ids[#ids + 1] = low[i] end
      local szs = redis.call('HMGET', sizes, unpack(ids))
      for i = 1, #ids do
        if free >= sy then break end
        local lk = tonumber(low[2 * i])
        if not (lk < c or (lk == c and ids[i] < y)) then ok = false break end
        victims[#victims + 1] = ids[i]
        free = free + tonumber(szs[i] or '0')
      end
      start = start + #ids
    end
    if ok then
      -- added before the victims go, so no key is ever emptied (and loses its TTL)
      for e = 1, k do redis.call('ZADD', caches[e], fmt(v[e]), y) end
      redis.call('HSET', sizes, y, sy)
      if #victims > 0 then
        for e = 1, k do redis.call('ZREM', caches[e], unpack(victims)) end
        redis.call('HDEL', sizes, unpack(victims))
        for _, w in ipairs(victims) do gone[w], stale[w] = true, nil end
      end
      evicted = evicted + #victims
      used = cap - free + sy
      if step == 1 then admitted = 1 else boosted = 1 end
    end
  end
  if step == 1 and hit == 0 and ARGV[12] ~= '' then
    redis.call('SET', KEYS[4 + 2 * k], ARGV[11], 'EX', ARGV[10])
    redis.call('SET', KEYS[5 + 2 * k], ARGV[12], 'EX', ARGV[10])
  end
end
for e = 1, k do
  local args = {}
  for j, v in pairs(vals) do
    args[#args + 1] = fmt(v[e])
    args[#args + 1] = j == 1 and x or z
  end
  redis.call('ZADD', ranks[e], unpack(args))
  if e ~= lead then
    args = {}
    for w, v in pairs(stale) do
      args[#args + 1] = fmt(v[e])
      args[#args + 1] = w
    end
    if #args > 0 then redis.call('ZADD', caches[e], unpack(args)) end
  end
end
local out = {'used', string.format('%d', used), 'clock', string.format('%d', clock)}
for e = 1, k do
  out[#out + 1] = 'score:' .. names[e]
  out[#out + 1] = fmt(score[e])
end
redis.call('HSET', meta, unpack(out))
-- keys this script may have created (the first request after a warm, or an empty cache)
-- expire with the warm's: an edge's keys live and go together. A meta the warm left
-- without a TTL gets the service's.
if clock0 == 0 or n == 0 then
  local ttl = redis.call('PTTL', meta)
  if ttl < 0 then
    ttl = tonumber(ARGV[10]) * 1000
    redis.call('PEXPIRE', meta, ttl)
  end
  for i = 1, 3 + 2 * k do
    if i ~= 2 and i ~= 4 and redis.call('PTTL', KEYS[i]) == -1 then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
return {hit, admitted, boosted, evicted}
"""


REJECT_REASONS = ("bad_id", "unknown_edge", "bad_time", "unknown_title")


@dataclass
class EdgeMetrics:
    """One edge's metric children, looked up once (``labels()`` costs microseconds a call)."""

    hits: Any
    misses: Any
    degraded: Any
    admissions: Any
    evictions: Any
    redis_errors: Any
    bytes_saved: Any
    origin_bytes: Any
    prediction: Any
    active_users: Any
    not_warm: Any
    latency: dict[str, Any]

    @classmethod
    def of(cls, m: DeliveryMetrics, edge_id: str) -> EdgeMetrics:
        for reason in REJECT_REASONS:  # exported at 0 from the start, so dashboards show no gaps
            m.rejected.labels(edge_id, reason)
        return cls(
            m.hits.labels(edge_id),
            m.misses.labels(edge_id),
            m.degraded.labels(edge_id),
            m.admissions.labels(edge_id),
            m.evictions.labels(edge_id),
            m.redis_errors.labels(edge_id),
            m.bytes_saved.labels(edge_id),
            m.origin_bytes.labels(edge_id),
            m.prediction.labels(edge_id),
            m.active_users.labels(edge_id),
            m.not_warm.labels(edge_id),
            {s: m.latency.labels(edge_id, s) for s in ("edge", "origin")},
        )


class DeliveryError(ValueError):
    """A request the delivery path refuses; ``reason`` names why (a metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Decision:
    edge_id: str
    user_id: str
    content_id: str
    source: str  # "edge" or "origin"
    degraded: bool = False  # served from the origin because Redis failed: no cache decision
    admitted: bool = False
    next_admitted: bool = False
    evicted: int = 0
    size: int | None = None  # bytes, when the catalog knows the title
    prediction: list[str] | None = None  # the fresh top-k written back on a miss

    @property
    def hit(self) -> bool:
        return self.source == "edge"


@dataclass(frozen=True)
class Readiness:
    """The readiness probe's answer: Redis answers and every edge's warm is there."""

    redis_up: bool
    warm: dict[str, str]  # edge -> "ok", "missing" or "unknown" (Redis did not answer)
    warm_date: dict[str, str | None]  # the date in each edge's marker (the last seen when unknown)

    @property
    def ready(self) -> bool:
        return self.redis_up and all(w == "ok" for w in self.warm.values())


class ActiveUsers:
    """Distinct viewers seen within ``window`` seconds of the latest request time."""

    def __init__(self, window: float = ACTIVE_WINDOW) -> None:
        self.window = window
        self._last: OrderedDict[str, float] = OrderedDict()  # by time of the last request, oldest first
        self._now = -float("inf")

    def see(self, user_id: str, at: float) -> int:
        """Record a request of ``user_id`` at ``at``; return how many viewers are active."""
        self._now = max(self._now, at)
        self._last[user_id] = max(at, self._last.pop(user_id, at))  # to the end: newest
        while self._last and next(iter(self._last.values())) < self._now - self.window:
            self._last.popitem(last=False)
        return len(self._last)


def parse_time(value: str | float | int | dt.datetime | None, now: Callable[[], float] = time.time) -> float:
    """Request time in Unix seconds: given as seconds, a datetime, or the log format
    ``YYYY-MM-DD HH:MM:SS`` (UTC, like the logs); None means now."""
    if value is None:
        return now()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


class Delivery:
    """The delivery path of one or more edges over one Redis."""

    def __init__(
        self,
        client: Client,
        edges: Iterable[str],
        capacity_bytes: int,
        ttl_seconds: int,
        top_k: int = 10,
        origin_latency: float = 0.0,
        retry_after: float = 1.0,
        refresh_seconds: float = 5.0,
        metrics: DeliveryMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        data_dir: Path | None = None,
        rewarm_interval: float = 60.0,
    ) -> None:
        """``data_dir`` holds the predictions a lost warm is re-warmed from (None: no re-warm
        until one is set); ``rewarm_interval`` is the least time between two re-warms of an edge."""
        self.edges = sorted(set(edges))
        for e in self.edges:
            if not is_valid_id(e):
                raise ValueError(f"invalid edge id {e!r}: ids are 1-64 of A-Z a-z 0-9 _ -")
        if not self.edges:
            raise ValueError("a delivery path needs at least one edge")
        if capacity_bytes < 1 or ttl_seconds < 1 or top_k < 1:
            raise ValueError("capacity_bytes, ttl_seconds and top_k must be positive")
        self.client = client
        self.cluster = is_cluster(client)
        self.capacity = int(capacity_bytes)
        self.ttl = int(ttl_seconds)
        self.top_k = top_k
        self.origin_latency = origin_latency
        self.retry_after = retry_after
        self.refresh_seconds = refresh_seconds
        self.metrics = metrics or default_metrics()
        self.clock = clock
        self._sha = sha1(DELIVER_LUA.encode()).hexdigest()  # EVALSHA; loaded on the first NOSCRIPT
        self.edge_metrics = {e: EdgeMetrics.of(self.metrics, e) for e in self.edges}
        # the script's edge keys, in its KEYS order
        self.edge_keys = {
            e: (
                edge_cache_key(e),
                edge_prior_key(e),
                edge_sizes_key(e),
                edge_meta_key(e),
                *(edge_cache_key(e, name) for name, _ in ADMISSION_COUNTS),
                *(edge_rank_key(e, r) for r in RANKINGS),
            )
            for e in self.edges
        }
        # the script's ARGV from sequel on: the rankings are the evaluation's
        self._rankings = (
            ADMISSION_SEQUEL,
            ADMISSION_MEMORY,
            " ".join(str(RANKINGS.index(r) + 1) for r in LEAD_ORDER),
            *(v for name, m in ADMISSION_COUNTS for v in (name, m)),
        )
        self.states = {e: EdgeState(e) for e in self.edges}
        self.active = {e: ActiveUsers() for e in self.edges}
        self._lock = threading.Lock()  # the service runs decisions on one thread, tests on several
        self._down_until = 0.0  # Redis is not tried again before this (clock time)
        self._refreshed = {e: -float("inf") for e in self.edges}
        self.redis_up = True
        for e in self.edges:
            self.metrics.redis_up.labels(e).set(1)
        self.data_dir = data_dir
        self.rewarm_interval = rewarm_interval
        # "ok", "missing" or "unknown" (not checked yet); the script reports a missing one too
        self.warm_status = {e: "unknown" for e in self.edges}
        self._marker_date: dict[str, str | None] = {e: None for e in self.edges}
        self._rewarmed_at = {e: -float("inf") for e in self.edges}  # clock time of the last attempt
        for e in self.edges:
            for outcome in REWARM_OUTCOMES:  # at 0 from the start, so rates and alerts see the first one
                self.metrics.rewarms.labels(e, outcome)

    # --- Redis health ---------------------------------------------------------------

    def _failed(self, edge_id: str) -> None:
        self.metrics.redis_errors.labels(edge_id).inc()
        self.redis_up = False
        self._down_until = self.clock() + self.retry_after
        for e in self.edges:
            self.metrics.redis_up.labels(e).set(0)

    def _recovered(self) -> None:
        if not self.redis_up:
            self.redis_up = True
            for e in self.edges:
                self.metrics.redis_up.labels(e).set(1)

    def check_ready(self) -> bool:
        """``readiness().ready``: Redis answers and every edge is warm."""
        return self.readiness().ready

    def readiness(self) -> Readiness:
        """Ask Redis now (the readiness probe) for every edge's warm marker, and pick up a new warm."""
        try:
            self.check_warm()
            with self._lock:
                for e in self.edges:
                    self.refresh(e)
        except redis.RedisError:
            self._failed(self.edges[0])
            return Readiness(
                False,
                {e: "unknown" for e in self.edges},
                {e: self._marker_date[e] or self.states[e].warm_date for e in self.edges},
            )
        self._recovered()
        return Readiness(True, dict(self.warm_status), dict(self._marker_date))

    # --- the warm marker and the re-warm -----------------------------------------------

    def check_warm(self) -> dict[str, str]:
        """Read every edge's warm marker (one round trip): "ok" or "missing" per edge.
        Raises redis.RedisError when Redis does not answer."""
        for e, marker in warm_markers(self.client, self.edges).items():
            self._set_warm(e, marker is not None)
            self._marker_date[e] = marker.date if marker else None
            if marker:
                day = dt.datetime.fromisoformat(marker.date).replace(tzinfo=dt.UTC)
                self.metrics.warm_date.labels(e).set(day.timestamp())
        return dict(self.warm_status)

    def _set_warm(self, edge_id: str, warm: bool) -> None:
        self.warm_status[edge_id] = "ok" if warm else "missing"
        self.metrics.edge_warm.labels(edge_id).set(1 if warm else 0)

    def heal(self) -> dict[str, str]:
        """Check the warm markers and re-warm the edges whose marker is missing, each at most
        once per ``rewarm_interval``; return the outcome for each edge tried (none while
        Redis is down: a Redis that comes back with its data needs no re-warm)."""
        if self.clock() < self._down_until:
            return {}
        try:
            self.check_warm()
        except redis.RedisError:
            self._failed(self.edges[0])
            return {}
        self._recovered()
        # A warm that landed since this process last read the state (the nightly warm, or
        # another worker's re-warm) is taken up now, not when a request next finds it stale.
        for e in self.edges:
            if self._marker_date[e] is not None and self._marker_date[e] != self.states[e].warm_date:
                with self._lock:
                    self.refresh(e, force=True)
        now = self.clock()
        due = [
            e
            for e in self.edges
            if self.warm_status[e] == "missing" and now - self._rewarmed_at[e] >= self.rewarm_interval
        ]
        if not due or self.data_dir is None:
            return {}
        for e in due:
            self._rewarmed_at[e] = now
        # The workers of a service (and services sharing an edge) all see the loss: one of
        # them re-warms each edge, the others count that as their attempt.
        claim = f"{os.getpid()}:{secrets.token_hex(4)}"
        claimed = [e for e in due if self._claim(e, claim)]
        if not claimed:
            return {}
        try:
            try:  # another process may have re-warmed it just before the claim was free
                self.check_warm()
            except redis.RedisError:
                return {}
            mine = [e for e in claimed if self.warm_status[e] == "missing"]
            return self._rewarm(mine) if mine else {}
        finally:
            for e in claimed:
                with contextlib.suppress(redis.RedisError):
                    self.client.eval(RELEASE_LUA, 1, edge_rewarm_key(e), claim)

    def _claim(self, edge_id: str, claim: str) -> bool:
        """Take the edge's re-warm claim (released when the re-warm ends, else after
        ``REWARM_CLAIM``); False when another process holds it."""
        try:
            return bool(self.client.set(edge_rewarm_key(edge_id), claim, nx=True, px=int(REWARM_CLAIM * 1000)))
        except redis.RedisError:
            return False

    def _rewarm(self, edges: list[str]) -> dict[str, str]:
        """One attempt to re-warm ``edges``: counted per edge by outcome and logged in one line."""
        started = time.perf_counter()
        try:
            outcome, detail = self._try_rewarm(edges)
        # Any failure (Redis, a file, a bug) is logged, counted and retried after the
        # interval, and the EdgeNotWarm alert fires while it lasts: the checks must go on.
        except Exception as exc:  # noqa: BLE001
            outcome, detail = "failed", f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        for e in edges:
            self.metrics.rewarms.labels(e, outcome).inc()
        which = f"edge{'s' if len(edges) > 1 else ''} {', '.join(edges)}"
        if outcome == "ok":
            log.warning(
                "%s: warm missing from Redis, re-warmed %s in %.1f s", which, detail, time.perf_counter() - started
            )
        else:
            log.warning(
                "%s: warm missing from Redis, re-warm %s: %s (next try in %g s)",
                which,
                outcome.replace("_", " "),
                detail,
                self.rewarm_interval,
            )
        return {e: outcome for e in edges}

    def _try_rewarm(self, edges: list[str]) -> tuple[str, str]:
        """Re-warm ``edges`` from the newest complete predictions: (outcome, what happened)."""
        from edgecache.serving import warm_cache as cache  # pandas and pyarrow: loaded only once a warm is lost

        assert self.data_dir is not None  # no re-warm is due without one (see rewarm_due)
        date = cache.latest_predictions(self.data_dir)
        if date is None:
            return "no_predictions", f"no complete predictions under {self.data_dir / 'predictions'}"
        ttl = cache.rewarm_ttl(self.data_dir, date, self.ttl)
        if ttl < 1:
            return "expired", (
                f"the newest predictions ({date}) are past their TTL of {self.ttl} s: "
                f"they stay expired until the next warm"
            )
        client = with_timeout(self.client, REWARM_TIMEOUT)
        try:
            result = cache.warm(client, self.data_dir, date, ttl, edges)
        finally:
            if client is not self.client:
                client.close()
        with self._lock:
            for e in edges:
                self.refresh(e, force=True)
        self.check_warm()
        lost = [e for e in edges if self.warm_status[e] != "ok"]
        if lost:
            return "failed", f"no warm marker after the warm for {', '.join(lost)}"
        return "ok", (
            f"from the predictions of {date}: {result.users} viewers, {result.prefetched_titles} "
            f"cached titles, keys expire in {ttl} s"
        )

    async def keep_warm(self, every: float = 1.0) -> None:
        """``heal`` every ``every`` seconds, off the event loop, until cancelled."""
        while True:
            try:
                await asyncio.to_thread(self.heal)
            except Exception:  # a bug must not end the checks for the life of the service
                log.exception("checking the warm markers failed")
            await asyncio.sleep(every)

    # --- the warm's state ------------------------------------------------------------

    def refresh(self, edge_id: str, force: bool = False) -> EdgeState:
        """The edge's state, re-read when a new warm landed (checked every ``refresh_seconds``)."""
        now = self.clock()
        if not force and now - self._refreshed[edge_id] < self.refresh_seconds:
            return self.states[edge_id]
        self._refreshed[edge_id] = now
        state = self.states[edge_id]
        date = warm_date(self.client, edge_id)
        # A Redis that lost its data (date None) leaves the last state in use until a warm.
        if force or (date is not None and date != state.warm_date):
            state = self.states[edge_id] = load_state(self.client, edge_id)
            if state.warm_date:
                day = dt.datetime.fromisoformat(state.warm_date).replace(tzinfo=dt.UTC)
                self.metrics.warm_date.labels(edge_id).set(day.timestamp())
        return state

    # --- the decision ------------------------------------------------------------------

    def check(self, edge_id: str, user_id: str, content_id: str) -> None:
        """Refuse what must not reach Redis: unknown edges and malformed ids."""
        label = edge_id if edge_id in self.states else self.edges[0]
        for kind, value in (("edge", edge_id), ("user", user_id), ("content", content_id)):
            if not isinstance(value, str) or not is_valid_id(value):
                self.metrics.rejected.labels(label, "bad_id").inc()
                raise DeliveryError("bad_id", f"invalid {kind} id {value!r}: ids are 1-64 of A-Z a-z 0-9 _ -")
        if edge_id not in self.states:
            self.metrics.rejected.labels(label, "unknown_edge").inc()
            raise DeliveryError("unknown_edge", f"edge {edge_id!r} is not served here (edges: {self.edges})")

    def decide(self, edge_id: str, user_id: str, content_id: str, at: float | None = None) -> Decision:
        """Hit or miss for one request, with the cache and prediction updates (no origin wait)."""
        self.check(edge_id, user_id, content_id)
        at = time.time() if at is None else at
        if not MIN_TIME <= at <= MAX_TIME:  # NaN fails too
            self.metrics.rejected.labels(edge_id, "bad_time").inc()
            raise DeliveryError("bad_time", f"request time {at!r} is not between 2000 and 2100")
        em = self.edge_metrics[edge_id]
        with self._lock:
            em.active_users.set(self.active[edge_id].see(user_id, at))
            if self.clock() < self._down_until:
                return self._degraded(edge_id, user_id, content_id)
            try:
                state = self.refresh(edge_id)
            except redis.RedisError:
                self._failed(edge_id)
                return self._degraded(edge_id, user_id, content_id)
            title = state.catalog.get(content_id)
            if state.catalog and title is None:
                self.metrics.rejected.labels(edge_id, "unknown_title").inc()
                raise DeliveryError("unknown_title", f"title {content_id!r} is not in the catalog")
            size = title.size if title else None
            started = time.perf_counter()
            prediction = state.predict(content_id, self.top_k)
            em.prediction.observe(time.perf_counter() - started)
            nxt = state.catalog.get(title.next_id) if title is not None and title.next_id else None
            # ids are checked above: the keys are built without checking again
            edge_keys = self.edge_keys[edge_id]
            ranked = json.dumps(prediction) if prediction else ""
            # On a cluster the viewer's keys live in other slots than the edge's: the script
            # keeps to the edge's slot and a miss writes the prediction in a second call.
            user = f"{USER_PREFIX}{user_id}"
            user_keys = [] if self.cluster else [user, user + TOPK_SUFFIX]
            try:
                hit, admitted, boosted, evicted = self._evalsha(
                    len(edge_keys) + len(user_keys),
                    *edge_keys,
                    *user_keys,
                    content_id,
                    size or 0,
                    title.next_id if nxt and title else "",
                    nxt.size if nxt else 0,
                    repr(float(at)),
                    self.capacity,
                    ADMISSION_TAU,
                    ADMISSION_BOOST,
                    ADMISSION_EPS,
                    self.ttl,
                    prediction[0] if prediction and not self.cluster else "",
                    "" if self.cluster else ranked,
                    *self._rankings,
                )
                if hit == NOT_WARM:
                    self._recovered()
                    return self._not_warm(edge_id, user_id, content_id, size)
                if self.cluster and not hit and prediction:
                    pipe = self.client.pipeline(transaction=False)
                    pipe.set(user, prediction[0], ex=self.ttl)
                    pipe.set(user + TOPK_SUFFIX, ranked, ex=self.ttl)
                    pipe.execute()
            except redis.RedisError:
                self._failed(edge_id)
                return self._degraded(edge_id, user_id, content_id, size)
            self._recovered()
        if hit:
            em.hits.inc()
            if size:
                em.bytes_saved.inc(size)
        else:
            em.misses.inc()
            if size:
                em.origin_bytes.inc(size)
        if admitted or boosted:
            em.admissions.inc(admitted + boosted)
        if evicted:
            em.evictions.inc(evicted)
        return Decision(
            edge_id,
            user_id,
            content_id,
            "edge" if hit else "origin",
            False,
            bool(admitted),
            bool(boosted),
            int(evicted),
            size,
            None if hit else prediction,
        )

    def _evalsha(self, numkeys: int, *keys_and_args: Any) -> list:
        # execute_command, not evalsha(): the same command without redis-py's argument
        # checks, a tenth of the worker's time per decision under load
        try:
            return self.client.execute_command("EVALSHA", self._sha, numkeys, *keys_and_args)
        except redis.exceptions.NoScriptError:  # a new or restarted Redis has no scripts yet
            self._sha = self.client.script_load(DELIVER_LUA)
            return self.client.execute_command("EVALSHA", self._sha, numkeys, *keys_and_args)

    def _degraded(self, edge_id: str, user_id: str, content_id: str, size: int | None = None) -> Decision:
        em = self.edge_metrics[edge_id]
        em.degraded.inc()
        if size:
            em.origin_bytes.inc(size)
        return Decision(edge_id, user_id, content_id, "origin", degraded=True, size=size)

    def _not_warm(self, edge_id: str, user_id: str, content_id: str, size: int | None) -> Decision:
        """The edge's warm is gone: served from the origin, with no decision until a re-warm."""
        self._set_warm(edge_id, False)
        self._marker_date[edge_id] = None
        self.edge_metrics[edge_id].not_warm.inc()
        return self._degraded(edge_id, user_id, content_id, size)

    def deliver(self, edge_id: str, user_id: str, content_id: str, at: float | None = None) -> Decision:
        """Decide, wait the simulated origin latency on a miss, record the latency."""
        started = time.perf_counter()
        decision = self.decide(edge_id, user_id, content_id, at)
        if decision.source == "origin" and self.origin_latency > 0:
            time.sleep(self.origin_latency)
        self.edge_metrics[edge_id].latency[decision.source].observe(time.perf_counter() - started)
        return decision

    async def deliver_async(self, edge_id: str, user_id: str, content_id: str, at: float | None = None) -> Decision:
        """``deliver`` for an event loop: the origin wait does not block other requests.

        The decision itself runs on the loop: it is one Redis round trip of a fraction of a
        millisecond (bounded by the client's socket timeout), cheaper than a thread hop."""
        started = time.perf_counter()
        decision = self.decide(edge_id, user_id, content_id, at)
        if decision.source == "origin" and self.origin_latency > 0:
            await asyncio.sleep(self.origin_latency)
        self.edge_metrics[edge_id].latency[decision.source].observe(time.perf_counter() - started)
        return decision

    def prediction(self, user_id: str) -> list[str] | None:
        """The viewer's ranked list in Redis (nightly or fresh), None when there is none."""
        if not is_valid_id(user_id):
            raise DeliveryError("bad_id", f"invalid user id {user_id!r}: ids are 1-64 of A-Z a-z 0-9 _ -")
        try:
            pipe = self.client.pipeline(transaction=False)  # two slots on a cluster: no MGET
            pipe.get(user_topk_key(user_id))
            pipe.get(user_key(user_id))
            raw, top = pipe.execute()
        except redis.RedisError:
            self._failed(self.edges[0])
            raise
        if raw is None:
            return None if top is None else [top.decode() if isinstance(top, bytes) else top]
        return json.loads(raw)


def delivery_client(url: str, timeout: float = 0.25, check_timeout: float = 2.0) -> Client:
    """A Redis client for the request path (a cluster with ``?cluster=true``): short
    timeouts and no retries, so a Redis failure turns into a degraded answer within
    ``timeout`` instead of a stalled request.

    The server is asked once first (within ``check_timeout``): one that refuses the
    credentials raises ``RedisAccessError``, since a wrong or missing password does not fix
    itself and a service started on one would only ever degrade. One that does not answer
    is let through: the service starts degraded and recovers when Redis comes back."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = connect(url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))
    with contextlib.suppress(RedisUnreachableError):
        check_access(client, check_timeout)
    return client


def warm_keeper(delivery: Delivery, every: float = 1.0) -> Callable[[Any], contextlib.AbstractAsyncContextManager]:
    """A lifespan for the edge service: while it runs, ``delivery.heal`` checks the warm
    markers every ``every`` seconds and re-warms lost edges. The predictions come from
    ``delivery.data_dir``, else from the data directory of the settings
    (``$EDGECACHE_DATA_DIR``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if delivery.data_dir is None:
            from edgecache.settings import Settings

            delivery.data_dir = Settings.from_env().data_dir
        task = asyncio.create_task(delivery.keep_warm(every))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan
