"""The settings the rest of easeoff reads: checked, typed, one struct per table of the file.

The file's own shape (feedback/config/schema.py) is decoded by msgspec; feedback/config/build.py
turns it into these, which is why a resource has `writers` and a `shape` where the file has
`hosts`, `primary` or `pair`. Secrets are kept out of every repr.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from easeoff.feedback.mysql_signals import status_signals
from easeoff.feedback.rate import Rate
from easeoff.feedback.schedules import Schedule
from easeoff.feedback.secrets import redact_url
from easeoff.feedback.tls import HostTLS

# Where a signal's number comes from: a built-in host probe, a custom SQL query on a
# resource's writable hosts, the app-side request counter, or a Prometheus query.
Source = Literal["mysql", "sql", "app", "prometheus"]
TRAFFIC_SOURCES: tuple[Source, ...] = ("app", "prometheus")  # read off the app or Prometheus, not a MySQL host
# The roles a host plays in a resource that decide what its probe reads and how it is judged.
WRITER_ROLES = frozenset({"primary", "pair"})  # written to: a heartbeat row; both halves of a pair must be fine
REPLICATING_ROLES = frozenset({"replica", "pair"})  # replicate: replication threads and lag
SCRAPE_INTERVAL = 15.0  # seconds: a budget's Prometheus scrapes the app this often unless told
Shape = Literal["hosts", "primary", "pair"]
Role = Literal["host", "primary", "pair", "replica"]  # what a host is to one resource
Measure = Literal["depth", "age"]  # what a water mark watches: ready jobs, the oldest one's age (s)
Priority = Literal["normal", "low"]
Mode = Literal["enforce", "shadow"]  # a shadow signal is probed and judged, counted and logged, and holds nothing
# Where a budget's live latency comes from: the server's own statements (query_response_time),
# a canary the prober times, or the app's own Prometheus histogram (feedback/budget/).
LatencySource = Literal["server", "canary", "prometheus"]

# Signals read off every MySQL host by the built-in probe.
HOST_SIGNALS = (*status_signals(), "latency", "history_list_length")  # status signals: feedback/mysql_signals/
# Signals read off hosts that replicate: replicas and both halves of a pair.
REPLICA_SIGNALS = ("lag",)
BUILTIN_SIGNALS = HOST_SIGNALS + REPLICA_SIGNALS


def _repr_without(record: msgspec.Struct, *secrets: str) -> str:
    """A record's repr with its secrets left out: a config printed or logged leaks no password."""
    shown = ", ".join(f"{name}={getattr(record, name)!r}" for name in record.__struct_fields__ if name not in secrets)
    return f"{type(record).__name__}({shown})"


class MySQLHost(msgspec.Struct, frozen=True):
    name: str
    host: str
    port: int
    user: str
    password: str
    connect_timeout: float = 0.5
    tls: HostTLS | None = None  # None: pymysql's PREFERRED mode (TLS if offered, unverified)

    def __repr__(self) -> str:
        return _repr_without(self, "password")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class Thresholds(msgspec.Struct, frozen=True):
    high: float
    low: float
    critical: float | None = None


class SignalConfig(msgspec.Struct, frozen=True):
    """One strain signal. `resources` limits where it applies; None means everywhere
    (for app and Prometheus traffic: globally, holding every queue)."""

    name: str
    high: float
    low: float
    critical: float | None = None
    fail_closed: bool = True
    source: str = "mysql"  # a Source, or a source module's own kind (feedback/signals/sources/)
    query: str | None = None
    url: str | None = None
    counter: str | None = None
    resources: tuple[str, ...] | None = None
    canary: str | None = None  # latency: the statement timed on each probe (feedback/signals/latency.py)
    window: int = 20  # latency: the p99 is over this many probes
    predict: float | None = None  # strained when its trend reaches high within this many seconds
    mode: Mode = "enforce"
    traffic: bool = False  # read off no MySQL host: the built-in traffic sources, or a source module's own
    options: Mapping[str, Any] = msgspec.field(default_factory=dict)  # a source module's own settings

    def __repr__(self) -> str:
        return _repr_without(self, "url")  # a Prometheus URL may carry credentials

    @property
    def shadow(self) -> bool:
        return self.mode == "shadow"

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.high, self.low, self.critical)

    @property
    def is_traffic(self) -> bool:
        return self.traffic or self.source in TRAFFIC_SOURCES

    @property
    def is_global_traffic(self) -> bool:
        return self.is_traffic and self.resources is None

    @property
    def source_key(self) -> str:
        """Where readings of app and Prometheus signals are cached (they have no host)."""
        return f"{self.source}:{self.name}"


class ConcurrencyConfig(msgspec.Struct, frozen=True):
    """A fleet-wide cap on heavy jobs running against one resource, adapted AIMD-style
    between `min` and `max`: +1 per healthy, saturated probe interval; times `decrease` on strain."""

    min: int = 1
    max: int = 8
    decrease: float = 0.5


class BudgetConfig(msgspec.Struct, frozen=True):
    """What the live site may feel on a resource while heavy work runs; the budget controller
    finds the most heavy work that keeps it. Latency is a ceiling in seconds (`latency`) or a
    multiple of the idle baseline learned while no heavy work runs (`latency_multiple`)."""

    latency: float | None = None
    latency_multiple: float | None = None
    quantile: float = 0.99
    latency_source: LatencySource | None = None  # None: "server" where the host has it, else "canary"
    window: float = 5.0  # seconds of live latency the quantile is taken over
    lag: float | None = None  # seconds
    history_list_length: float | None = None  # InnoDB's undo backlog, in transactions
    prometheus_url: str | None = None
    metric: str | None = None  # the app's histogram (without `_bucket`), for latency_source = "prometheus"
    scrape_interval: float = SCRAPE_INTERVAL  # how often that Prometheus scrapes the app: a rate spans two

    @property
    def prometheus_range(self) -> float:
        """Seconds of the app's histogram a reading spans: the window, but at least two scrapes
        (a rate needs two samples; a shorter range reads as no requests at all)."""
        return max(self.window, 2 * self.scrape_interval)

    @property
    def reading_lag(self) -> float:
        """Seconds before a reading shows a change in full: its window, and from Prometheus the
        range plus one scrape (the newest requests are not in it until scraped)."""
        if self.latency_source == "prometheus":
            return self.prometheus_range + self.scrape_interval
        return self.window

    def __repr__(self) -> str:
        return _repr_without(self, "prometheus_url")  # a Prometheus URL may carry credentials

    @property
    def read_on_hosts(self) -> bool:
        """A latency ceiling read off the resource's hosts (their probers), not off Prometheus."""
        has_latency = self.latency is not None or self.latency_multiple is not None
        return has_latency and self.latency_source != "prometheus"


class ResourceConfig(msgspec.Struct, frozen=True):
    """What a job touches: a primary, a master-master pair or plain hosts, plus replicas."""

    name: str
    writers: tuple[str, ...]
    replicas: tuple[str, ...] = ()
    shape: Shape = "hosts"  # plain hosts, a primary, or a master-master pair
    ignore_worst: int = 0
    overrides: Mapping[str, Thresholds] = msgspec.field(default_factory=dict)
    concurrency: ConcurrencyConfig | None = None
    rate: Rate | None = None  # at most so many job starts in any window, fleet-wide
    budget: BudgetConfig | None = None

    @property
    def hosts(self) -> tuple[str, ...]:
        return self.writers + self.replicas

    @property
    def pair(self) -> bool:
        return self.shape == "pair"

    def role(self, host: str) -> Role:
        """`host` for plain hosts (load signals only), else `primary`, `pair` or `replica`."""
        if host in self.replicas:
            return "replica"
        return self.shape if self.shape != "hosts" else "host"


class WaterMark(msgspec.Struct, frozen=True):
    """One queue measure (`depth` in jobs, `age` of the oldest ready job in seconds) with
    high- and low-water marks. High fires above `high` and resolves only below `low`;
    low fires below `low` (a drained queue) and resolves only above `high`. Both must
    hold for `for_s` before firing and keep firing for `keep_firing_for_s` after."""

    measure: Measure
    high: float | None
    low: float | None
    for_s: float = 60.0
    keep_firing_for_s: float = 0.0


class QueueConfig(msgspec.Struct, frozen=True):
    name: str
    resources: tuple[str, ...] = ()
    watermarks: tuple[WaterMark, ...] = ()
    priority: Priority = "normal"  # "low" queues leave a resource's last concurrency slot to others


class BackoffConfig(msgspec.Struct, frozen=True):
    base: float = 1.0
    cap: float = 60.0
    max_deferrals: int | None = None  # past either cap a job fails, with the reason
    max_age: float | None = 86400.0  # seconds since its first deferral
    # A job on a resource this config does not declare (configs out of step during a deploy)
    # fails closed, then fails outright after this many seconds rather than waiting out max_age.
    unknown_resource_grace: float = 300.0


class Config(msgspec.Struct, frozen=True, dict=True):  # dict: room for the per-host indexes below
    source: str
    redis_url: str
    probe_interval: float
    probe_timeout: float
    stale_after: float
    backoff: BackoffConfig
    hosts: Mapping[str, MySQLHost]
    resources: Mapping[str, ResourceConfig]
    signals: Mapping[str, SignalConfig]
    queues: Mapping[str, QueueConfig]
    task_modules: tuple[str, ...] = ()  # the app's modules that declare heavy tasks
    probe_concurrency: int = 16  # probes one process runs at once: a slow host holds up only its own
    # Probing follows demand (feedback/signals/demand.py): a host no job has wanted for
    # `probe_dormant_after` seconds is probed every `probe_dormant_interval` (Vitess: 250 ms,
    # then 5 s after a minute idle); equal to probe_interval, it never slows.
    probe_dormant_after: float = 60.0
    probe_dormant_interval: float = 5.0
    # Replicas that must hold each write before a client goes on (Redis WAIT; 0: do not wait),
    # and how long a write waits for them (feedback/replica_acks.py).
    replica_acks: int = 0
    replica_ack_timeout: float = 1.0
    switch_stale_after: float = 86400.0  # a switch on longer is stale: alerted on, listed by `switches --stale`
    schedules: Mapping[str, Schedule] = msgspec.field(default_factory=dict)  # [schedules.NAME] (feedback/schedules.py)
    # [levers.NAME]: a lever module's own table, read by its settings type (feedback/levers/lever.py)
    levers: Mapping[str, Mapping[str, Any]] = msgspec.field(default_factory=dict)

    def __repr__(self) -> str:
        return _repr_without(self, "redis_url")

    def hosts_for(self, resources: Iterable[str]) -> tuple[str, ...]:
        """The hosts whose readings gate work on these resources, in config order."""
        wanted: set[str] = set()
        for resource in resources:
            if resource in self.resources:
                wanted.update(self.resources[resource].hosts)
        return tuple(name for name in self.hosts if name in wanted)

    def host_roles(self, host: str) -> frozenset[str]:
        """Every role a host plays across resources: it decides what its probe reads."""
        return self._roles_by_host.get(host) or frozenset({"host"})

    def thresholds(self, signal: str, host: str) -> Thresholds:
        """A resource's override for its hosts (the first resource's, in config order), else the
        signal's own thresholds (so for a traffic source, which is no resource's host, always
        the signal's own)."""
        found = self._overrides_by_host.get(host, {}).get(signal)
        return found if found is not None else self.signals[signal].thresholds

    # Indexes, worked out once per config: the gate asks for every signal of every host on each
    # judgement, and a scan of the resources per question made that quadratic in the hosts
    # (a fifth of a busy prober's CPU at 300 host entries).
    @functools.cached_property
    def _roles_by_host(self) -> dict[str, frozenset[str]]:
        roles: dict[str, set[str]] = {}
        for resource in self.resources.values():
            for host in resource.hosts:
                roles.setdefault(host, set()).add(resource.role(host))
        return {host: frozenset(found) for host, found in roles.items()}

    @functools.cached_property
    def _overrides_by_host(self) -> dict[str, dict[str, Thresholds]]:
        overrides: dict[str, dict[str, Thresholds]] = {}
        for resource in self.resources.values():
            for host in resource.hosts:
                for signal, limits in resource.overrides.items():
                    overrides.setdefault(host, {}).setdefault(signal, limits)
        return overrides

    @property
    def traffic_sources(self) -> tuple[str, ...]:
        """Cache keys of the signals that are not read off a MySQL host."""
        return tuple(s.source_key for s in self.signals.values() if s.is_traffic)

    @property
    def probe_targets(self) -> tuple[str, ...]:
        return tuple(self.hosts) + self.traffic_sources

    def queue_resources(self, queue: str) -> tuple[str, ...]:
        q = self.queues.get(queue)
        return q.resources if q else ()

    @property
    def redis_url_redacted(self) -> str:
        return redact_url(self.redis_url)
