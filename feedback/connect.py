"""The Redis of a config, for apps that enqueue and for every easeoff process: a plain
`redis://` URL, or a Sentinel-managed primary (`redis+sentinel://`, feedback/sentinel.py).

Apps enqueue without repeating the URL: `task.delay(...)` goes to the Redis of the
config found the usual way (`$EASEOFF_CONFIG`, else `./easeoff.toml`), and refuses
resources that config does not declare.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from redis import Redis

from easeoff import __version__
from easeoff.feedback import clock, redis_internals
from easeoff.feedback.config import Config, ConfigError, default_config_path, load_config
from easeoff.feedback.replica_acks import AckedRedis, awaiting_replicas
from easeoff.feedback.sentinel import is_sentinel_url, sentinel_client

CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 5.0
# What Redis being down, out of reach or refusing writes for now raises (a primary turned replica
# after a failover: READONLY; out of memory: OOM): the errors workers and the exporter ride out.
# Let through, a worker's loop would end in rq's catch-all with its horse running on unwatched.
REDIS_UNREACHABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
)


def _driver_info() -> dict[str, Any]:
    """Who we are in CLIENT LIST on Redis 7.2+ (`redis-py(easeoff_v0.1.0)`), from the versions the
    packages carry rather than their installed metadata: redis-py 8 would otherwise read its own
    metadata for every new connection (a work horse opens one per job: about 300 page faults and a
    third of a millisecond), and reading it even once costs every process a millisecond at start."""
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # redis-py before 8 resolves its version once, at import
        return {}
    return {"driver_info": DriverInfo(lib_version=redis.__version__).add_upstream_driver("easeoff", __version__)}


_DRIVER_INFO = _driver_info()
_lock = threading.Lock()
_targets: dict[str, tuple[Redis, frozenset[str]]] = {}


def connect(config: Config | None = None) -> Redis:
    """A client for the config's Redis (the default config when none is given); not yet connected."""
    config = load_config() if config is None else config
    try:
        options = {"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": SOCKET_TIMEOUT, **_DRIVER_INFO}
        kind = AckedRedis if config.replica_acks else Redis
        if is_sentinel_url(config.redis_url):
            client = sentinel_client(config.redis_url, redis_class=kind, **options)
        else:
            client = kind.from_url(config.redis_url, **options)
            pool = client.connection_pool
            pool.connection_class(
                **redis_internals.pool_options(client)
            )  # options are checked here, not at the first command
        if isinstance(client, AckedRedis):
            awaiting_replicas(client, config.replica_acks, config.replica_ack_timeout)
        clock.follow(client)  # the fleet's one clock: the Redis this process connected to last
        return client
    except (TypeError, ValueError) as exc:  # an option the URL's scheme does not take, say
        raise ConfigError(config.source, "redis.url", f"{config.redis_url_redacted} is not usable: {exc}") from None


def default_target() -> tuple[Redis, frozenset[str]]:
    """The default config's Redis and the resources it declares, loaded once per config path."""
    path = str(default_config_path().resolve())
    with _lock:
        if path not in _targets:
            config = load_config(path)
            _targets[path] = (connect(config), frozenset(config.resources))
        return _targets[path]
