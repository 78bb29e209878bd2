"""One way to open Redis from a URL: a single server, or a Redis Cluster.

``redis://host:port/0`` opens one server; adding ``?cluster=true`` opens a Redis Cluster
with that node as its seed (the client finds the others). Everything that writes or reads
the project's keys works on both: an edge's keys share a hash tag, so its multi-key
operations stay in one slot.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.cluster import RedisCluster

Client = redis.Redis | RedisCluster


def split_cluster_flag(url: str) -> tuple[str, bool]:
    """``url`` without its ``cluster`` query parameter, and whether it asked for a cluster."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flags = [v for k, v in query if k == "cluster"]
    rest = [(k, v) for k, v in query if k != "cluster"]
    if any(v.lower() not in ("true", "false", "1", "0", "yes", "no") for v in flags):
        raise ValueError(f"cluster= must be true or false in {url!r}")
    cluster = any(v.lower() in ("true", "1", "yes") for v in flags)
    return urlunsplit(parts._replace(query=urlencode(rest))), cluster


def connect(url: str, **kwargs: Any) -> Client:
    """A client for ``url`` (see the module docstring); ``kwargs`` go to redis-py."""
    plain, cluster = split_cluster_flag(url)
    if cluster:
        if urlsplit(plain).path not in ("", "/", "/0"):
            raise ValueError(f"a Redis Cluster has database 0 only, got {url!r}")
        return RedisCluster.from_url(plain, **kwargs)
    return redis.Redis.from_url(plain, **kwargs)


def is_cluster(client: Client) -> bool:
    return isinstance(client, RedisCluster)


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, for logs and messages."""
    u = urlsplit(url)
    if not u.password:
        return url
    netloc = f"{u.username or ''}:***@{u.hostname}" + (f":{u.port}" if u.port else "")
    return urlunsplit(u._replace(netloc=netloc))
