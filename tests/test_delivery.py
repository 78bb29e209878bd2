"""The delivery decision against a real (embedded) redis-server."""

from __future__ import annotations

import json
import math

import pytest
from prometheus_client import CollectorRegistry

from edgecache.serving.warm_cache import warm
from edgecache.serving.delivery import Delivery, DeliveryError
from edgecache.serving.delivery.core import ActiveUsers, parse_time
from edgecache.serving.delivery.metrics import DeliveryMetrics
from edgecache.serving.keys import edge_cache_key, edge_meta_key, edge_sizes_key, user_key, user_topk_key
from edgecache.evaluation.policies import Trace, hit_ratios
from edgecache.serving.admission import ADMISSION_EPS, ADMISSION_TAU, RANKINGS
from tests.delivery_data import DATE, T0, TTL, seeded_day


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"edge": "E1", **labels}) or 0.0


def cached(client) -> dict[str, float]:
    return {k.decode(): v for k, v in client.zrange(edge_cache_key("E1"), 0, -1, withscores=True)}


def test_hit_serves_from_the_edge_and_boosts_the_next_episode(small_delivery):
    d, registry, client = small_delivery
    decision = d.deliver("E1", "U1", "C01", T0 + 3600)
    assert decision.hit and decision.source == "edge" and decision.prediction is None
    # C01's value moves to its request time; its next episode C02 (2 expected + the boost)
    # outvalues C04 (1), the lowest, which is evicted
    assert decision.next_admitted and decision.evicted == 1
    assert cached(client) == pytest.approx({"C01": math.log(10 + ADMISSION_EPS) + 3600 / ADMISSION_TAU,
                                            "C02": math.log(2 + 8 + ADMISSION_EPS) + 3600 / ADMISSION_TAU})
    assert client.hgetall(edge_sizes_key("E1")) == {b"C01": b"100", b"C02": b"100"}
    assert client.hget(edge_meta_key("E1"), "used") == b"200"
    assert not client.exists(user_key("U1"))  # a hit writes no prediction
    assert sample(registry, "cache_hits_total") == 1 and sample(registry, "cache_misses_total") == 0
    assert sample(registry, "edgecache_origin_bytes_saved_total") == 100
    assert sample(registry, "edgecache_evictions_total") == 1
    assert sample(registry, "edgecache_delivery_seconds_count", source="edge") == 1


def test_miss_admits_by_value_and_evicts_at_capacity(small_delivery):
    d, registry, client = small_delivery
    decision = d.deliver("E1", "U2", "C05", T0)
    assert not decision.hit and decision.source == "origin" and not decision.degraded
    assert decision.admitted and decision.evicted == 1  # C05 (5) beats C04 (1)
    assert set(cached(client)) == {"C01", "C05"}
    assert client.hget(edge_meta_key("E1"), "used") == b"200"  # still within capacity
    # C07 nobody expects: its value is below every cached title's, so it is not admitted
    refused = d.deliver("E1", "U3", "C07", T0 + 1)
    assert not refused.hit and not refused.admitted and refused.evicted == 0
    assert set(cached(client)) == {"C01", "C05"}
    assert sample(registry, "cache_misses_total") == 2
    assert sample(registry, "edgecache_admissions_total") == 1
    assert sample(registry, "edgecache_origin_bytes_total") == 200


def test_a_miss_writes_a_fresh_prediction_back(small_delivery):
    d, registry, client = small_delivery
    decision = d.deliver("E1", "U2", "C05", T0)
    # C05 has no next episode: what E1's viewers watched after it (most often first), then
    # E1's most expected titles, never C05 itself
    assert decision.prediction == ["C06", "C07", "C01", "C02"]
    assert client.get(user_key("U2")) == b"C06"  # the seed's GET user:<id>
    assert json.loads(client.get(user_topk_key("U2"))) == ["C06", "C07", "C01", "C02"]
    assert 0 < client.ttl(user_key("U2")) <= TTL
    assert d.prediction("U2") == ["C06", "C07", "C01", "C02"]
    assert sample(registry, "edgecache_prediction_seconds_count") == 1
    # an episode's fresh prediction starts with the next episode
    assert d.deliver("E1", "U4", "C02", T0).prediction[0] == "C03"


def test_bad_input_never_reaches_redis(small_delivery):
    d, registry, client = small_delivery
    before = {k: client.dump(k) for k in client.scan_iter()}
    for edge, user, title, reason in (("E1", "U1:*", "C01", "bad_id"), ("E1", "U1", "C01\n", "bad_id"),
                                      ("E1", "U" * 65, "C01", "bad_id"), ("E1", "", "C01", "bad_id"),
                                      ("E9", "U1", "C01", "unknown_edge"), ("E1", "U1", "C99", "unknown_title"),
                                      ("E1", "U1", "C01", "bad_time")):
        with pytest.raises(DeliveryError) as err:
            d.deliver(edge, user, title, T0 if reason != "bad_time" else float("nan"))
        assert err.value.reason == reason
    assert {k: client.dump(k) for k in client.scan_iter()} == before
    assert sample(registry, "edgecache_rejected_requests_total", reason="bad_id") == 4
    assert sample(registry, "edgecache_rejected_requests_total", reason="unknown_edge") == 1
    assert sample(registry, "edgecache_rejected_requests_total", reason="unknown_title") == 1
    assert sample(registry, "cache_hits_total") + sample(registry, "cache_misses_total") == 0


def test_active_users_counts_distinct_viewers_in_the_window():
    active = ActiveUsers(window=300)
    assert [active.see(u, t) for u, t in (("A", 0), ("B", 10), ("A", 20), ("C", 315))] == [1, 2, 2, 2]
    assert active.see("D", 1000) == 1


def test_request_times_parse_like_the_logs():
    assert parse_time("2025-04-13 00:00:00") == T0
    assert parse_time(T0 + 5) == T0 + 5
    assert parse_time(None, now=lambda: 42.0) == 42.0


@pytest.mark.parametrize(("shuffled", "leader"), [(False, "pred"), (True, "slow")])
def test_delivery_matches_the_evaluation_kernel(tmp_path, redis_client, shuffled, leader):
    """The Lua script and the evaluation's predictive+admission kernel, request by request:
    the same hits on a seeded day with series, sizes and a cache far smaller than the catalog,
    under a prediction worth following and under a useless one (which the request counts
    take the lead from)."""
    day = seeded_day(tmp_path, shuffled=shuffled)
    warm(redis_client, tmp_path, DATE, TTL)
    d = Delivery(redis_client, ["E1"], day.capacity, TTL, metrics=DeliveryMetrics(CollectorRegistry()))
    hits = [d.deliver("E1", user, title, ts).hit for user, title, ts in day.requests]
    reference = hit_ratios("predictive+admission", day.trace, day.capacity, day.ranking)
    assert 0.2 < reference.object_hit_ratio < 0.9  # a cache that has to choose
    assert sum(hits) == reference.hits
    t = day.trace
    for n in (1, 10, 100, 700, 2000):  # and on every prefix tried, so no two errors cancel out
        prefix = Trace(t.obj_id[:n], t.size[:n], t.timestamp[:n])
        assert sum(hits[:n]) == hit_ratios("predictive+admission", prefix, day.capacity, day.ranking).hits, n
    meta = {k.decode(): v.decode() for k, v in redis_client.hgetall(edge_meta_key("E1")).items()}
    scores = {r: float(meta[f"score:{r}"]) for r in RANKINGS}
    assert max(scores, key=scores.get) == leader, scores
    assert int(meta["clock"]) == int(day.trace.size.sum())
    for key in redis_client.scan_iter("edge:*"):
        assert 0 < redis_client.ttl(key) <= TTL, key  # keys the script created expire too


def test_without_its_warm_an_edge_serves_from_the_origin_and_writes_nothing(small_delivery):
    """Redis lost the warm: no decision, no key without a TTL, no meta without t0."""
    d, registry, client = small_delivery
    assert d.deliver("E1", "U1", "C01", T0).hit
    client.flushdb()
    for user, title in (("U1", "C01"), ("U2", "C05"), ("U3", "C02")):
        decision = d.deliver("E1", user, title, T0 + 60)
        assert decision.source == "origin" and decision.degraded and decision.size == 100
    assert client.dbsize() == 0
    assert d.warm_status["E1"] == "missing" and sample(registry, "edgecache_edge_warm") == 0
    assert sample(registry, "edgecache_not_warm_requests_total") == 3
    assert sample(registry, "edgecache_degraded_requests_total") == 3
    assert sample(registry, "cache_misses_total") == 0 and sample(registry, "edgecache_redis_errors_total") == 0
    # a meta the warm did not write (no t0) is no warm either
    client.hset(edge_meta_key("E1"), mapping={"date": DATE, "used": 0})
    assert d.deliver("E1", "U4", "C01", T0 + 61).degraded
    assert client.hgetall(edge_meta_key("E1")) == {b"date": DATE.encode(), b"used": b"0"}
    ready = d.readiness()
    assert not ready.ready and ready.redis_up and ready.warm == {"E1": "missing"} and ready.warm_date == {"E1": None}


def test_keys_a_delivery_creates_expire_with_the_warm(small_delivery):
    d, _, client = small_delivery
    client.persist(edge_meta_key("E1"))  # a meta left without a TTL gets the service's
    d.deliver("E1", "U2", "C05", T0)  # creates the counting rankings' keys and U2's prediction
    left = {k.decode(): client.ttl(k) for k in client.scan_iter()}
    assert {"edge:{E1}:rank:slow", "user:U2", "user:U2:topk"} <= set(left)
    assert all(0 < t <= TTL for t in left.values()), left
    assert client.hget(edge_meta_key("E1"), "t0") == str(T0).encode()
