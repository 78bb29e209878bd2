"""Shared fixtures: a small local SparkSession and a real, embedded redis-server."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its home at import: give the tests their own, never the user's.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="edgecache-test-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")


# py4j logs from __del__ at interpreter exit, after pytest closed the streams.
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def spark():
    from edgecache.pipeline.spark import get_spark

    session = get_spark("edgecache-tests", "local[2]")
    session.conf.set("spark.sql.shuffle.partitions", "2")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from edgecache.ops.redis_server import EmbeddedRedis, free_port

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), port=free_port())
    assert server.start(), "a redis-server was already listening on the chosen port"
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    client = redis_server.client()
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def small_delivery(tmp_path, redis_client):
    """A ``Delivery`` of edge E1 over the small day of ``tests.delivery_data``, warmed, with
    its own metrics registry: (delivery, registry, client)."""
    from prometheus_client import CollectorRegistry

    from edgecache.serving.warm_cache import warm
    from edgecache.serving.delivery import Delivery
    from edgecache.serving.delivery.metrics import DeliveryMetrics
    from tests.delivery_data import CATALOG, DATE, DEMAND, PREFETCH, TRANSITIONS, TTL, write_day

    write_day(tmp_path, CATALOG, PREFETCH, DEMAND, TRANSITIONS)
    warm(redis_client, tmp_path, DATE, TTL)
    registry = CollectorRegistry()
    return Delivery(redis_client, ["E1"], 200, TTL, top_k=4, metrics=DeliveryMetrics(registry)), registry, redis_client
