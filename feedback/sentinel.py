"""Redis through Sentinel: the primary's address comes from the sentinels, and after a
failover every new connection goes to the promoted replica.

rq runs on a plain Redis client, and a Sentinel-managed one is that: redis-py's
`Sentinel.master_for` gives a client whose pool asks the sentinels for the primary before
each new connection and drops its connections when the primary moves (a demoted primary's
READONLY answers count as that). So workers, the exporter and the CLI ride a failover as they
ride a restart (they wait for Redis and carry on), and every job move stays one transaction on
whichever server is primary. Redis Cluster is not supported: rq's multi-key scripts and
transactions would cross slots.

    redis+sentinel://[:password@]host:port[,host:port...]/service[/db][?sentinel_password=...]
    rediss+sentinel://...   TLS to the sentinels and to the primary
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from easeoff.feedback import redis_internals

SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_PORT = 26379


class SentinelURL(msgspec.Struct, frozen=True):
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0] in SCHEMES


def parse_sentinel_url(url: str) -> SentinelURL:
    """The URL's parts; ValueError names what is wrong, never the password."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"a Sentinel URL starts with {' or '.join(s + '://' for s in SCHEMES)}")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", netloc
    username, _, password = userinfo.partition(":")
    sentinels = []
    for part in hosts.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon:
            host, port = part.strip(), str(DEFAULT_PORT)
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address {part.strip()!r} is not host:port")
        sentinels.append((host, int(port)))
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise ValueError("no service name: redis+sentinel://host:26379,.../SERVICE[/DB]")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ValueError("the path is /SERVICE or /SERVICE/DB, DB a number")
    options = parse_qs(query)
    unknown = set(options) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r} (known: sentinel_password)")
    return SentinelURL(
        sentinels=tuple(sentinels),
        service=unquote(segments[0]),
        db=int(segments[1]) if len(segments) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=options["sentinel_password"][0] if "sentinel_password" in options else None,
        tls=scheme == "rediss+sentinel",
    )


class FollowsPromotions(Sentinel):
    """A Sentinel manager that goes to a promoted replica before the sentinels name it.

    The sentinels' leader promotes a replica (REPLICAOF NO ONE) and names it primary only once
    its next INFO confirms the promotion: about 0.8 s later (measured on loopback: promoted
    1.4 s after the primary's death, named at 2.2 s). A client whose primary stopped answering
    looks among the replicas the sentinels list (`find_promoted`); one that reports itself a
    master is the sentinels' own choice. It is used while the sentinels still name the dead
    primary (or, mid-failover, none); the moment they name any server, theirs is used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.promoted: tuple[str, int] | None = None
        self._dead: tuple[str, int] | None = None  # what the sentinels named when it was found

    def discover_master(self, service_name: str) -> tuple[str, int]:
        try:
            named = super().discover_master(service_name)
        except MasterNotFoundError:  # mid-failover the sentinels name no primary
            if self.promoted is not None:
                return self.promoted
            raise
        address = (str(named[0]), int(named[1]))
        if self.promoted is not None and address == self._dead:
            return self.promoted  # promoted, not yet named
        self.promoted = self._dead = None
        return address

    def find_promoted(self, service_name: str, **connection: Any) -> tuple[str, int] | None:
        if self.promoted is not None:
            return self.promoted
        try:
            named = super().discover_master(service_name)
            dead: tuple[str, int] | None = (str(named[0]), int(named[1]))
        except MasterNotFoundError:  # mid-failover: the sentinels name none
            dead = None
        except RedisError:
            return None
        try:
            replicas = self.discover_slaves(service_name)
        except RedisError:
            return None
        once = Retry(NoBackoff(), 0)  # redis-py retries a refused connection for seconds by default
        for replica in replicas:
            host, port = str(replica[0]), int(replica[1])
            try:
                with Redis(host, port, socket_connect_timeout=0.2, socket_timeout=0.2, retry=once, **connection) as r:
                    if r.info("replication").get("role") == "master":
                        self.promoted, self._dead = (host, port), dead
                        return self.promoted
            except RedisError:
                continue
        return None


def look_for_promotion(client: Redis) -> tuple[str, int] | None:
    """The primary does not answer: if the sentinels already promoted one of its replicas, send
    the client's new connections there now (a Sentinel URL's client; else nothing to do)."""
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool) or not isinstance(pool.sentinel_manager, FollowsPromotions):
        return None
    wanted = ("username", "password", "ssl", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
    credentials = {k: v for k, v in redis_internals.pool_options(client).items() if k in wanted}
    return pool.sentinel_manager.find_promoted(pool.service_name, **credentials)


def sentinel_client(url: str, redis_class: type[Redis] = Redis, **connection: Any) -> Redis:
    """A client (of `redis_class`) of the service's current primary; `connection`: socket
    timeouts and the like."""
    parsed = parse_sentinel_url(url)
    tls: dict[str, Any] = {"ssl": True} if parsed.tls else {}
    timeouts = {k: v for k, v in connection.items() if k.startswith("socket_")}
    sentinel_kwargs = {**timeouts, **tls, "password": parsed.sentinel_password}
    manager = FollowsPromotions(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs)
    client: Redis = manager.master_for(
        parsed.service,
        redis_class=redis_class,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        **tls,
        **connection,
    )
    return client
