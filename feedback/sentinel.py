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

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from redis import Redis
from redis.sentinel import Sentinel

SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
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


def sentinel_client(url: str, redis_class: type[Redis] = Redis, **connection: Any) -> Redis:
    """A client (of `redis_class`) of the service's current primary; `connection`: socket
    timeouts and the like."""
    parsed = parse_sentinel_url(url)
    tls = {"ssl": True} if parsed.tls else {}
    timeouts = {k: v for k, v in connection.items() if k.startswith("socket_")}
    sentinel_kwargs = {**timeouts, **tls, "password": parsed.sentinel_password}
    manager = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs)
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
