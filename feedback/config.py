"""One TOML file describes the fleet; this module turns it into checked, typed settings.

Every error names the file and the dotted key, so `easeoff config check` can print
one line an operator can act on. Secrets come from the environment and are kept out
of every repr and message.
"""

from __future__ import annotations

import functools
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast, get_args
from urllib.parse import unquote, urlsplit

import msgspec

from easeoff.feedback.durations import HINT, parse_duration
from easeoff.feedback.mysql_signals import status_signals
from easeoff.feedback.rate import Rate, parse_rate
from easeoff.feedback.schedules import Schedule, ScheduleError, parse_schedules
from easeoff.feedback.secrets import redact_url
from easeoff.feedback.sentinel import is_sentinel_url, parse_sentinel_url
from easeoff.feedback.tls import HostTLS, client_context

DEFAULT_CONFIG_NAME = "easeoff.example.toml"  # package data of `easeoff`: what `config init` writes
APP_CONFIG_NAME = "easeoff.toml"  # an app's own config, found in the current directory
CONFIG_ENV = "EASEOFF_CONFIG"
REDIS_URL_ENV = "EASEOFF_REDIS_URL"
TASK_MODULES_ENV = "EASEOFF_TASK_MODULES"  # comma-separated; replaces [tasks] modules

Source = Literal["mysql", "sql", "app", "prometheus"]
TRAFFIC_SOURCES: tuple[Source, ...] = ("app", "prometheus")  # read off the app or Prometheus, not a MySQL host
# The roles a host plays in a resource that decide what its probe reads and how it is judged.
WRITER_ROLES = frozenset({"primary", "pair"})  # written to: a heartbeat row; both halves of a pair must be fine
REPLICATING_ROLES = frozenset({"replica", "pair"})  # replicate: replication threads and lag
Shape = Literal["hosts", "primary", "pair"]
Role = Literal["host", "primary", "pair", "replica"]  # what a host is to one resource
Measure = Literal["depth", "age"]
Priority = Literal["normal", "low"]
Mode = Literal["enforce", "shadow"]  # a shadow signal is probed and judged, counted and logged, and holds nothing
# Where a budget's live latency comes from: the server's own statements (query_response_time),
# a canary the prober times, or the app's own Prometheus histogram (feedback/budget/).
LatencySource = Literal["server", "canary", "prometheus"]
LATENCY_SOURCES: tuple[LatencySource, ...] = get_args(LatencySource)
BUDGET_KEYS = frozenset(
    {"latency", "quantile", "latency_source", "window", "lag", "history_list_length", "prometheus_url", "metric"}
)

TLS_KEYS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_verify_identity")  # a [mysql.hosts.NAME] table's TLS
# Signals read off every MySQL host by the built-in probe.
HOST_SIGNALS = (*status_signals(), "latency", "history_list_length")  # status signals: feedback/mysql_signals/
# Signals read off hosts that replicate: replicas and both halves of a pair.
REPLICA_SIGNALS = ("lag",)
BUILTIN_SIGNALS = HOST_SIGNALS + REPLICA_SIGNALS
# Where a signal's number comes from: a built-in host probe, a custom SQL query on a
# resource's writable hosts, the app-side request counter, or a Prometheus query.
SOURCES: tuple[Source, ...] = get_args(Source)
# What a queue's water marks watch: ready jobs, and the age of the oldest ready job (s).
WATERMARK_MEASURES: tuple[Measure, ...] = get_args(Measure)


class ConfigError(ValueError):
    """A config problem, phrased as `file: key: what is wrong`."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


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
    source: Source = "mysql"
    query: str | None = None
    url: str | None = None
    counter: str | None = None
    resources: tuple[str, ...] | None = None
    canary: str | None = None  # latency: the statement timed on each probe (feedback/signals/latency.py)
    window: int = 20  # latency: the p99 is over this many probes
    predict: float | None = None  # strained when its trend reaches high within this many seconds
    mode: Mode = "enforce"

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
        return self.source in TRAFFIC_SOURCES

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


def default_config_path() -> Path:
    """`EASEOFF_CONFIG`, else the app's `./easeoff.toml`; with neither, a ConfigError saying where
    it looked and how to give one. Never the example shipped in the package: a worker on it would
    work on redis://127.0.0.1:6379/0 and probe root@127.0.0.1, saying nothing. Asking for the
    example is giving its path (`--config`, `EASEOFF_CONFIG`), which the error names."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    if Path(APP_CONFIG_NAME).is_file():
        return Path(APP_CONFIG_NAME)
    raise ConfigError(
        str(Path(APP_CONFIG_NAME).absolute()),
        "",
        f"no such file, and no --config or ${CONFIG_ENV} names another: give one with --config FILE or "
        f"{CONFIG_ENV}=FILE, or write ./{APP_CONFIG_NAME} with `easeoff config init` "
        f"(the packaged example, to run on as it is: {packaged_example_path()})",
    )


def packaged_example_path() -> Path:
    """The commented example config, package data of `easeoff` (also what `config init` writes)."""
    return Path(str(resources.files("easeoff") / DEFAULT_CONFIG_NAME))


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate; raise ConfigError on any problem."""
    config_path = Path(path) if path is not None else default_config_path()
    source = str(config_path)
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"cannot read: {exc.__class__.__name__}") from None
    return parse_config(text, source, os.environ if environ is None else environ)


def parse_config(text: str, source: str, environ: Mapping[str, str]) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML ({exc})") from None
    return _Parser(source, environ).config(raw)


_ENV_NAME = re.compile(r"[^A-Z0-9]+")


def host_env_prefix(host_name: str) -> str:
    """`db-1` → `EASEOFF_MYSQL_DB_1`: where a host's URL and password overrides live."""
    return "EASEOFF_MYSQL_" + _ENV_NAME.sub("_", host_name.upper()).strip("_")


class _Parser:
    """Walks the raw TOML with a key path, so every complaint can name where it is."""

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, key, problem)

    def table(self, raw: Mapping[str, Any], key: str, required: bool = False) -> Mapping[str, Any]:
        name = key.rsplit(".", 1)[-1]
        value = raw.get(name)
        if value is None:
            if required:
                raise self.fail(key, "missing table")
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        return value

    def number(self, raw: Mapping[str, Any], key: str, default: float | None = None, minimum: float = 0.0) -> float:
        name = key.rsplit(".", 1)[-1]
        value = raw.get(name, default)
        if value is None:
            raise self.fail(key, "missing number")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, not {type(value).__name__}")
        if not math.isfinite(value) or value < minimum:
            raise self.fail(key, f"must be a finite number >= {minimum:g}")
        return float(value)

    def duration(
        self,
        raw: Mapping[str, Any],
        key: str,
        default: float | None = None,
        minimum: float = 0.0,
        zero_ok: bool = False,
    ) -> float:
        """Seconds, as a number or as a duration like `"90s"`, `"2m"`, `"1h30m"` or `"1d"`
        (feedback/durations.py: one syntax for every duration in the file)."""
        value = raw.get(key.rsplit(".", 1)[-1], default)
        if value is None:
            raise self.fail(key, f"missing duration ({HINT})")
        if isinstance(value, str):
            try:
                seconds = parse_duration(value, zero_ok=zero_ok)
            except ValueError as exc:
                raise self.fail(key, str(exc)) from None
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(key, f"must be a number of seconds or a duration ({HINT}), not {type(value).__name__}")
        else:
            seconds = float(value)
        if seconds < minimum:
            raise self.fail(key, f"must be a duration >= {minimum:g}s ({HINT})")
        if seconds <= 0 and not zero_ok:
            raise self.fail(key, f"must be a positive number of seconds or a duration ({HINT})")
        return seconds

    def string(self, raw: Mapping[str, Any], key: str, default: str | None = None) -> str:
        name = key.rsplit(".", 1)[-1]
        value = raw.get(name, default)
        if value is None:
            raise self.fail(key, "missing string")
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a non-empty string")
        return value

    def names(self, raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
        name = key.rsplit(".", 1)[-1]
        value = raw.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "must be a list of names")
        return tuple(value)

    def reject_unknown(self, raw: Mapping[str, Any], key: str, allowed: set[str]) -> None:
        for name in raw:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise self.fail(where, f"unknown key (expected one of: {', '.join(sorted(allowed))})")

    def config(self, raw: Mapping[str, Any]) -> Config:
        self.reject_unknown(
            raw,
            "",
            {
                "redis",
                "probe",
                "backoff",
                "mysql",
                "resources",
                "signals",
                "queues",
                "tasks",
                "switches",
                "schedules",
                "levers",
            },
        )
        redis = self.table(raw, "redis")
        self.reject_unknown(redis, "redis", {"url", "replica_acks", "replica_ack_timeout"})
        replica_acks = self.number(redis, "redis.replica_acks", 0, minimum=0)
        if replica_acks != int(replica_acks) or replica_acks > 16:
            raise self.fail("redis.replica_acks", "must be a whole number of replicas from 0 to 16")
        replica_ack_timeout = self.duration(redis, "redis.replica_ack_timeout", 1.0, minimum=0.001)
        redis_url = self.environ.get(REDIS_URL_ENV) or self.string(redis, "redis.url", "redis://127.0.0.1:6379/0")
        if is_sentinel_url(redis_url):
            try:
                parse_sentinel_url(redis_url)
            except ValueError as exc:
                raise self.fail("redis.url", str(exc)) from None
        elif urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
            raise self.fail("redis.url", "must be a redis://, rediss://, unix:// or redis+sentinel:// URL")

        probe = self.table(raw, "probe")
        self.reject_unknown(
            probe, "probe", {"interval", "timeout", "stale_after", "concurrency", "dormant_after", "dormant_interval"}
        )
        interval = self.duration(probe, "probe.interval", 1.0, minimum=0.05)
        timeout = self.duration(probe, "probe.timeout", min(0.5, interval), minimum=0.01)
        stale_after = self.duration(probe, "probe.stale_after", 5 * interval, minimum=interval)
        concurrency = self.number(probe, "probe.concurrency", 16, minimum=1)
        if concurrency != int(concurrency) or concurrency > 256:
            raise self.fail("probe.concurrency", "must be a whole number from 1 to 256")
        dormant_after = self.duration(probe, "probe.dormant_after", 60.0)
        dormant_interval = self.duration(probe, "probe.dormant_interval", max(5.0, interval))
        if dormant_interval < interval:
            raise self.fail("probe.dormant_interval", "must be at least probe.interval (equal: probing never slows)")

        backoff_raw = self.table(raw, "backoff")
        self.reject_unknown(
            backoff_raw, "backoff", {"base", "cap", "max_deferrals", "max_age", "unknown_resource_grace"}
        )
        max_deferrals = self.number(backoff_raw, "backoff.max_deferrals", 0, minimum=0)
        if max_deferrals != int(max_deferrals):
            raise self.fail("backoff.max_deferrals", "must be a whole number (0 for no cap)")
        max_age = self.duration(backoff_raw, "backoff.max_age", 86400.0, zero_ok=True)
        backoff = BackoffConfig(
            base=self.duration(backoff_raw, "backoff.base", 1.0, minimum=0.01),
            cap=self.duration(backoff_raw, "backoff.cap", 60.0, minimum=0.01),
            max_deferrals=int(max_deferrals) or None,
            max_age=max_age or None,
            unknown_resource_grace=self.duration(backoff_raw, "backoff.unknown_resource_grace", 300.0, zero_ok=True),
        )
        if backoff.cap < backoff.base:
            raise self.fail("backoff.cap", "must be >= backoff.base")

        hosts = self.hosts(self.table(self.table(raw, "mysql"), "mysql.hosts"), timeout)
        signals = self.signals(self.table(raw, "signals"))
        resources = self.resources(self.table(raw, "resources"), hosts, signals)
        self.check_signal_scopes(signals, resources)
        queues = self.queues(self.table(raw, "queues"), resources)
        task_modules = self.task_modules(self.table(raw, "tasks"))
        switches = self.table(raw, "switches")
        self.reject_unknown(switches, "switches", {"stale_after"})
        try:
            schedules = parse_schedules(self.table(raw, "schedules"))
        except ScheduleError as exc:
            raise self.fail(exc.key, exc.problem) from None
        levers_raw = self.table(raw, "levers")
        levers = {name: self.table(levers_raw, f"levers.{name}") for name in levers_raw}
        return Config(
            levers=levers,
            source=self.source,
            redis_url=redis_url,
            probe_interval=interval,
            probe_timeout=timeout,
            probe_concurrency=int(concurrency),
            probe_dormant_after=dormant_after,
            probe_dormant_interval=dormant_interval,
            replica_acks=int(replica_acks),
            replica_ack_timeout=replica_ack_timeout,
            stale_after=stale_after,
            backoff=backoff,
            hosts=hosts,
            resources=resources,
            signals=signals,
            queues=queues,
            task_modules=task_modules,
            switch_stale_after=self.duration(switches, "switches.stale_after", 86400.0),
            schedules=schedules,
        )

    def task_modules(self, raw: Mapping[str, Any]) -> tuple[str, ...]:
        """`[tasks] modules`, unless the environment names others (a deploy's override)."""
        self.reject_unknown(raw, "tasks", {"modules"})
        override = self.environ.get(TASK_MODULES_ENV)
        if override is not None:
            modules = tuple(m.strip() for m in override.split(",") if m.strip())
            key = TASK_MODULES_ENV
        else:
            modules, key = self.names(raw, "tasks.modules"), "tasks.modules"
        for module in modules:
            if not all(part.isidentifier() for part in module.split(".")):
                raise self.fail(key, f"{module!r} is not a module name (like myapp.tasks)")
        return modules

    def hosts(self, raw: Mapping[str, Any], timeout: float) -> dict[str, MySQLHost]:
        hosts: dict[str, MySQLHost] = {}
        for name in raw:
            key = f"mysql.hosts.{name}"
            entry = self.table(raw, key)
            self.reject_unknown(entry, key, {"url", *TLS_KEYS})
            prefix = host_env_prefix(name)
            url = self.environ.get(f"{prefix}_URL") or self.string(entry, f"{key}.url")
            parts = urlsplit(url)
            if parts.scheme != "mysql" or not parts.hostname:
                raise self.fail(f"{key}.url", "must look like mysql://USER[:PASSWORD]@HOST[:PORT]")
            try:
                port = parts.port or 3306
            except ValueError:
                raise self.fail(f"{key}.url", "has a port that is not a number") from None
            password = self.environ.get(f"{prefix}_PASSWORD", unquote(parts.password or ""))
            hosts[name] = MySQLHost(
                name=name,
                host=parts.hostname,
                port=port,
                user=unquote(parts.username or "root"),
                password=password,
                connect_timeout=timeout,
                tls=self.host_tls(entry, key),
            )
        return hosts

    def host_tls(self, entry: Mapping[str, Any], key: str) -> HostTLS | None:
        """`ssl_ca`, `ssl_cert`, `ssl_key`, `ssl_verify_identity`: each file must exist and load
        (checked now, so a typo is a one-line error at start, not a probe_error later)."""
        ca, cert, keyfile = (self.tls_file(entry, f"{key}.{name}") for name in ("ssl_ca", "ssl_cert", "ssl_key"))
        verify = entry.get("ssl_verify_identity", True)
        if not isinstance(verify, bool):
            raise self.fail(f"{key}.ssl_verify_identity", "must be true or false")
        if ca is None and cert is None:
            for name in ("ssl_key", "ssl_verify_identity"):
                if name in entry:
                    raise self.fail(f"{key}.{name}", "needs ssl_ca (or ssl_cert) in the same table")
            return None
        if keyfile is not None and cert is None:
            raise self.fail(f"{key}.ssl_key", "needs ssl_cert (the client certificate it belongs to)")
        tls = HostTLS(ca=ca, cert=cert, key=keyfile, verify_identity=verify)
        checks = [("ssl_ca", HostTLS(ca=ca))] if ca is not None else []  # the CA alone, then the chain
        checks += [("ssl_cert", tls)] if cert is not None else []
        for name, loaded in checks:
            try:
                client_context(loaded)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise self.fail(f"{key}.{name}", f"cannot load: {getattr(exc, 'reason', None) or exc}") from None
        return tls

    def tls_file(self, entry: Mapping[str, Any], key: str) -> str | None:
        """A TLS file's path, relative to the config file's folder; it must exist."""
        if key.rsplit(".", 1)[-1] not in entry:
            return None
        path = Path(self.string(entry, key)).expanduser()
        if not path.is_absolute():
            path = Path(self.source).resolve().parent / path
        if not path.is_file():
            raise self.fail(key, f"no such file {str(path)!r}")
        return str(path)

    def resources(
        self, raw: Mapping[str, Any], hosts: Mapping[str, MySQLHost], signals: Mapping[str, SignalConfig]
    ) -> dict[str, ResourceConfig]:
        resources: dict[str, ResourceConfig] = {}
        for name in raw:
            key = f'resources."{name}"'
            entry = raw[name]
            if not isinstance(entry, dict):
                raise self.fail(key, "must be a table")
            self.reject_unknown(
                entry,
                key,
                {"hosts", "primary", "pair", "replicas", "ignore_worst", "signals", "concurrency", "rate", "budget"},
            )
            shapes = [k for k in ("hosts", "primary", "pair") if k in entry]
            if len(shapes) != 1:
                raise self.fail(key, "needs exactly one of hosts, primary or pair")
            shape = cast(Shape, shapes[0])
            if shape == "primary":
                writers: tuple[str, ...] = (self.string(entry, f"{key}.primary"),)
            else:
                writers = self.names(entry, f"{key}.{shape}")
            if shape == "pair" and len(writers) != 2:
                raise self.fail(f"{key}.pair", "must name exactly two hosts")
            replicas = self.names(entry, f"{key}.replicas")
            for field_name, names in ((shape, writers), ("replicas", replicas)):
                for host in names:
                    if host not in hosts:
                        raise self.fail(f"{key}.{field_name}", f"names unknown host {host!r} (not under [mysql.hosts])")
            if set(writers) & set(replicas):
                raise self.fail(f"{key}.replicas", "must not name a host that is also a writer")
            ignore_worst = self.number(entry, f"{key}.ignore_worst", 0, minimum=0)
            if ignore_worst != int(ignore_worst):
                raise self.fail(f"{key}.ignore_worst", "must be a whole number")
            overrides = {}
            for signal, limits in self.table(entry, f"{key}.signals").items():
                where = f"{key}.signals.{signal}"
                if signal not in signals:
                    raise self.fail(where, "overrides a signal not configured under [signals]")
                if not isinstance(limits, dict):
                    raise self.fail(where, "must be a table")
                overrides[signal] = self.thresholds(limits, where)
            resources[name] = ResourceConfig(
                name=name,
                writers=writers,
                replicas=replicas,
                shape=shape,
                ignore_worst=int(ignore_worst),
                overrides=overrides,
                concurrency=self.concurrency(entry, f"{key}.concurrency"),
                rate=self.rate(entry, f"{key}.rate"),
                budget=self.budget(entry, f"{key}.budget", name, replicating=bool(replicas) or shape == "pair"),
            )
        self.check_overrides_agree(resources)
        return resources

    def rate(self, entry: Mapping[str, Any], key: str) -> Rate | None:
        if "rate" not in entry:
            return None
        try:
            return parse_rate(entry["rate"])
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def budget(self, entry: Mapping[str, Any], key: str, resource: str, replicating: bool) -> BudgetConfig | None:
        if "budget" not in entry:
            return None
        raw = self.table(entry, key)
        self.reject_unknown(raw, key, set(BUDGET_KEYS))
        latency, multiple = None, None
        if "latency" in raw:
            latency, multiple = self.budget_latency(raw["latency"], f"{key}.latency")
        quantile = self.number(raw, f"{key}.quantile", 0.99)
        if not 0 < quantile < 1:
            raise self.fail(f"{key}.quantile", "must be between 0 and 1 (0.99 for the p99)")
        source = raw.get("latency_source")
        if source is not None and source not in LATENCY_SOURCES:
            raise self.fail(f"{key}.latency_source", f"must be one of: {', '.join(LATENCY_SOURCES)}")
        url = self.environ.get(f"EASEOFF_BUDGET_{_ENV_NAME.sub('_', resource.upper()).strip('_')}_PROMETHEUS_URL")
        url = url or raw.get("prometheus_url")
        if source == "prometheus":
            metric = self.string(raw, f"{key}.metric")
            if url is None or urlsplit(str(url)).scheme not in ("http", "https"):
                raise self.fail(f"{key}.prometheus_url", "must be an http:// or https:// URL")
        else:
            for only in ("prometheus_url", "metric"):
                if only in raw:
                    raise self.fail(f"{key}.{only}", 'applies only with latency_source = "prometheus"')
            metric, url = None, None
        lag = self.duration(raw, f"{key}.lag", 1.0) if "lag" in raw else None
        if lag is not None and not replicating:
            raise self.fail(f"{key}.lag", "needs replicas (or a pair): this resource has no replication to lag")
        history = self.number(raw, f"{key}.history_list_length", minimum=1) if "history_list_length" in raw else None
        if latency is None and multiple is None and lag is None and history is None:
            raise self.fail(key, "needs latency, lag or history_list_length")
        return BudgetConfig(
            latency=latency,
            latency_multiple=multiple,
            quantile=quantile,
            latency_source=cast(LatencySource | None, source),
            window=self.duration(raw, f"{key}.window", 5.0),
            lag=lag,
            history_list_length=history,
            prometheus_url=url,
            metric=metric,
        )

    def budget_latency(self, value: object, key: str) -> tuple[float | None, float | None]:
        """`"1.5x"` (times the learned idle baseline) or a time (`"4ms"`, `0.004`): (seconds, multiple)."""
        if isinstance(value, str) and value.strip().lower().endswith("x"):
            try:
                multiple = float(value.strip()[:-1])
            except ValueError:
                multiple = math.nan
            if not math.isfinite(multiple) or multiple <= 1:
                raise self.fail(key, f"{value!r}: a multiple of the idle baseline must be a number above 1, like 1.5x")
            return None, multiple
        if isinstance(value, str):
            try:
                return parse_duration(value), None
            except ValueError:
                raise self.fail(key, f"{value!r} is neither a multiple (1.5x) nor a time (4ms, 0.004)") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise self.fail(key, f"{value!r} is neither a multiple (1.5x) nor a time (4ms, 0.004)")
        return float(value), None

    def concurrency(self, entry: Mapping[str, Any], key: str) -> ConcurrencyConfig | None:
        if "concurrency" not in entry:
            return None
        raw = self.table(entry, key)
        self.reject_unknown(raw, key, {"min", "max", "decrease"})
        low = self.number(raw, f"{key}.min", 1, minimum=1)
        high = self.number(raw, f"{key}.max", minimum=1)
        if low != int(low) or high != int(high):
            raise self.fail(key, "min and max must be whole numbers")
        if low > high:
            raise self.fail(f"{key}.min", f"must not exceed max ({high:g})")
        decrease = self.number(raw, f"{key}.decrease", 0.5, minimum=0.01)
        if decrease >= 1:
            raise self.fail(f"{key}.decrease", "must be below 1")
        return ConcurrencyConfig(min=int(low), max=int(high), decrease=decrease)

    def check_overrides_agree(self, resources: Mapping[str, ResourceConfig]) -> None:
        """A host in two resources must not get two different thresholds for one signal."""
        seen: dict[tuple[str, str], tuple[str, Thresholds]] = {}
        for resource in resources.values():
            for signal, limits in resource.overrides.items():
                for host in resource.hosts:
                    earlier = seen.setdefault((host, signal), (resource.name, limits))
                    if earlier[1] != limits:
                        raise self.fail(
                            f'resources."{resource.name}".signals.{signal}',
                            f"host {host!r} already has other thresholds from resource {earlier[0]!r}",
                        )

    def thresholds(self, entry: Mapping[str, Any], key: str) -> Thresholds:
        high = self.number(entry, f"{key}.high")
        low = self.number(entry, f"{key}.low")
        if low > high:
            raise self.fail(f"{key}.low", f"must not exceed high ({high:g})")
        critical = None
        if "critical" in entry:
            critical = self.number(entry, f"{key}.critical")
            if critical < high:
                raise self.fail(f"{key}.critical", f"must not be below high ({high:g})")
        return Thresholds(high, low, critical)

    def signals(self, raw: Mapping[str, Any]) -> dict[str, SignalConfig]:
        signals: dict[str, SignalConfig] = {}
        for name in raw:
            key = f"signals.{name}"
            entry = self.table(raw, key)
            self.reject_unknown(
                entry,
                key,
                {
                    "high",
                    "low",
                    "critical",
                    "fail_closed",
                    "source",
                    "query",
                    "url",
                    "counter",
                    "resources",
                    "canary",
                    "window",
                    "predict",
                    "mode",
                },
            )
            for only_latency in ("canary", "window"):
                if only_latency in entry and name != "latency":
                    raise self.fail(f"{key}.{only_latency}", "applies only to the latency signal")
            window = self.number(entry, f"{key}.window", 20, minimum=2)
            if window != int(window) or window > 1000:
                raise self.fail(f"{key}.window", "must be a whole number of probes from 2 to 1000")
            source = entry.get("source", "sql" if "query" in entry else "mysql")
            if source not in SOURCES:
                raise self.fail(f"{key}.source", f"must be one of: {', '.join(SOURCES)}")
            if source == "mysql" and name not in BUILTIN_SIGNALS:
                raise self.fail(
                    key, f"unknown built-in signal (known: {', '.join(BUILTIN_SIGNALS)}; or give a query or source)"
                )
            needs = {"sql": ("query",), "prometheus": ("url", "query"), "app": (), "mysql": ()}[source]
            for required in needs:
                self.string(entry, f"{key}.{required}")
            if source == "prometheus" and urlsplit(entry["url"]).scheme not in ("http", "https"):
                raise self.fail(f"{key}.url", "must be an http:// or https:// URL")
            fail_closed = entry.get("fail_closed", True)
            if not isinstance(fail_closed, bool):
                raise self.fail(f"{key}.fail_closed", "must be true or false")
            limits = self.thresholds(entry, key)
            mode = entry.get("mode", "enforce")
            if mode not in get_args(Mode):
                raise self.fail(f"{key}.mode", 'must be "enforce" or "shadow"')
            scope = self.names(entry, f"{key}.resources") if "resources" in entry else None
            signals[name] = SignalConfig(
                name=name,
                high=limits.high,
                low=limits.low,
                critical=limits.critical,
                fail_closed=fail_closed,
                source=cast(Source, source),
                query=entry.get("query"),
                url=self.environ.get(f"EASEOFF_SIGNAL_{_ENV_NAME.sub('_', name.upper())}_URL", entry.get("url")),
                counter=entry.get("counter", name) if source == "app" else None,
                resources=scope,
                canary=self.string(entry, f"{key}.canary") if "canary" in entry else None,
                window=int(window),
                predict=self.duration(entry, f"{key}.predict", minimum=0.001) if "predict" in entry else None,
                mode=cast(Mode, mode),
            )
        return signals

    def check_signal_scopes(self, signals: Mapping[str, SignalConfig], resources: Mapping[str, ResourceConfig]) -> None:
        for signal in signals.values():
            for resource in signal.resources or ():
                if resource not in resources:
                    raise self.fail(f"signals.{signal.name}.resources", f"names unknown resource {resource!r}")

    def queues(self, raw: Mapping[str, Any], resources: Mapping[str, ResourceConfig]) -> dict[str, QueueConfig]:
        queues: dict[str, QueueConfig] = {}
        for name in raw:
            key = f"queues.{name}"
            entry = self.table(raw, key)
            self.reject_unknown(entry, key, {"resources", "watermarks", "priority"})
            priority = entry.get("priority", "normal")
            if priority not in ("normal", "low"):
                raise self.fail(f"{key}.priority", 'must be "normal" or "low"')
            names = self.names(entry, f"{key}.resources")
            for resource in names:
                if resource not in resources:
                    raise self.fail(f"{key}.resources", f"names unknown resource {resource!r}")
            marks = self.watermarks(self.table(entry, f"{key}.watermarks"), f"{key}.watermarks")
            queues[name] = QueueConfig(name=name, resources=names, watermarks=marks, priority=cast(Priority, priority))
        return queues

    def watermarks(self, raw: Mapping[str, Any], key: str) -> tuple[WaterMark, ...]:
        marks = []
        for measure in raw:
            where = f"{key}.{measure}"
            if measure not in WATERMARK_MEASURES:
                raise self.fail(where, f"unknown measure (known: {', '.join(WATERMARK_MEASURES)})")
            entry = self.table(raw, where)
            self.reject_unknown(entry, where, {"high", "low", "for", "keep_firing_for"})
            high = self.mark_level(entry, f"{where}.high", measure) if "high" in entry else None
            low = self.mark_level(entry, f"{where}.low", measure) if "low" in entry else None
            if high is None and low is None:
                raise self.fail(where, "needs high, low or both")
            if high is not None and low is not None and low > high:
                raise self.fail(f"{where}.low", f"must not exceed high ({high:g})")
            marks.append(
                WaterMark(
                    measure=measure,
                    high=high,
                    low=low,
                    for_s=self.duration(entry, f"{where}.for", 60.0, zero_ok=True),
                    keep_firing_for_s=self.duration(entry, f"{where}.keep_firing_for", 0.0, zero_ok=True),
                )
            )
        return tuple(marks)

    def mark_level(self, entry: Mapping[str, Any], key: str, measure: str) -> float:
        """A water mark's level: a number of jobs, or for `age` a duration (`"1h"`, `3600`)."""
        return self.duration(entry, key, zero_ok=True) if measure == "age" else self.number(entry, key)
