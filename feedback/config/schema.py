"""The config file's own shape, table by table, as msgspec decodes it.

msgspec checks every type, bound (`Meta`) and key (`forbid_unknown_fields`) here and says where
a value is wrong; feedback/config/build.py adds what one value cannot say alone (low below high,
a resource naming a known host) and turns these into the settings in feedback/config/model.py.
A default of None is one that build.py works out from another setting or the environment.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, ClassVar, cast
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from easeoff.feedback.config.errors import Problem, env_name
from easeoff.feedback.config.model import BUILTIN_SIGNALS, LatencySource, Mode, Priority
from easeoff.feedback.config.units import (
    AtLeast1ms,
    AtLeast10ms,
    AtLeast50ms,
    Count,
    Latency,
    Level,
    Name,
    Seconds,
    SecondsOrZero,
)
from easeoff.feedback.rate import Rate


class Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A TOML table: a key it does not name is a typo, refused."""


class Redis(Table):
    url: Name | None = None  # $EASEOFF_REDIS_URL, else this, else redis://127.0.0.1:6379/0
    replica_acks: Annotated[int, Meta(ge=0, le=16)] = 0
    replica_ack_timeout: AtLeast1ms = AtLeast1ms(1.0)


class Probe(Table):
    interval: AtLeast50ms = AtLeast50ms(1.0)
    timeout: AtLeast10ms | None = None  # default: min(0.5 s, interval)
    stale_after: Seconds | None = None  # default: 5 intervals
    concurrency: Annotated[int, Meta(ge=1, le=256)] = 16
    dormant_after: Seconds = Seconds(60.0)
    dormant_interval: Seconds | None = None  # default: max(5 s, interval)


class Backoff(Table):
    base: AtLeast10ms = AtLeast10ms(1.0)
    cap: AtLeast10ms = AtLeast10ms(60.0)
    max_deferrals: Count = 0  # 0: no cap
    max_age: SecondsOrZero = SecondsOrZero(86400.0)  # 0: no cap
    unknown_resource_grace: SecondsOrZero = SecondsOrZero(300.0)


class Host(Table):
    url: Name | None = None  # $EASEOFF_MYSQL_<HOST>_URL may stand in for it
    ssl_ca: Name | None = None
    ssl_cert: Name | None = None
    ssl_key: Name | None = None
    ssl_verify_identity: bool | None = None  # None: not given (true when TLS is on)


class MySQL(Table):
    hosts: dict[str, Host] = {}


class Override(Table):
    """A resource's own thresholds for a signal (`[resources."NAME".signals.SIGNAL]`)."""

    high: Level
    low: Level
    critical: Level | None = None


class Signal(Table, tag_field="source"):
    """A signal, tagged by where its number comes from (`source`; "sql" when it has a query, else
    "mysql"). Each source's table says what it adds to the signal's settings (`settings`)."""

    high: Level
    low: Level
    critical: Level | None = None
    fail_closed: bool = True
    resources: tuple[Name, ...] | None = None  # None: everywhere
    predict: AtLeast1ms | None = None
    mode: Mode = "enforce"
    # Read off no MySQL host (the app, Prometheus, a source module's own): one global probe target.
    traffic: ClassVar[bool] = False

    def settings(self, name: str, environ: Mapping[str, str]) -> dict[str, Any]:
        """This source's own fields of SignalConfig (a source module's go in `options`); Problem
        names a key of the table at fault."""
        raise NotImplementedError


class MySQLSignal(Signal, tag="mysql"):
    canary: Name | None = None  # the latency signal's: a statement timed on each probe
    window: Annotated[int, Meta(ge=2, le=1000)] | None = None  # the latency signal's: probes in its p99

    def settings(self, name: str, environ: Mapping[str, str]) -> dict[str, Any]:
        if name not in BUILTIN_SIGNALS:
            known = ", ".join(BUILTIN_SIGNALS)
            raise Problem("", f"unknown built-in signal (known: {known}; or give a query or source)")
        for field, given in (("canary", self.canary), ("window", self.window)):
            if given is not None and name != "latency":
                raise Problem(field, "applies only to the latency signal")
        return {"canary": self.canary, "window": self.window or 20}


class SQLSignal(Signal, tag="sql", kw_only=True):
    query: Name

    def settings(self, name: str, environ: Mapping[str, str]) -> dict[str, Any]:
        return {"query": self.query}


class AppSignal(Signal, tag="app"):
    traffic = True
    counter: Name | None = None  # default: the signal's name

    def settings(self, name: str, environ: Mapping[str, str]) -> dict[str, Any]:
        return {"counter": self.counter or name}


class PrometheusSignal(Signal, tag="prometheus", kw_only=True):
    traffic = True
    url: Name  # $EASEOFF_SIGNAL_<NAME>_URL replaces it (it may carry credentials)
    query: Name

    def settings(self, name: str, environ: Mapping[str, str]) -> dict[str, Any]:
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise Problem("url", "must be an http:// or https:// URL")
        return {"query": self.query, "url": environ.get(f"EASEOFF_SIGNAL_{env_name(name)}_URL", self.url)}


AnySignal = MySQLSignal | SQLSignal | AppSignal | PrometheusSignal
BUILTIN_SIGNAL_TABLES: tuple[type[Signal], ...] = (MySQLSignal, SQLSignal, AppSignal, PrometheusSignal)


class Concurrency(Table, kw_only=True):
    min: Annotated[int, Meta(ge=1)] = 1
    max: Annotated[int, Meta(ge=1)]
    decrease: Annotated[float, Meta(ge=0.01, lt=1)] = 0.5


class Budget(Table):
    latency: Latency | None = None
    quantile: Annotated[float, Meta(gt=0, lt=1)] = 0.99
    latency_source: LatencySource | None = None
    window: Seconds = Seconds(5.0)
    lag: Seconds | None = None
    history_list_length: Annotated[float, Meta(ge=1, le=1e308)] | None = None
    prometheus_url: Name | None = None
    metric: Name | None = None
    scrape_interval: Seconds | None = None


class Resource(Table):
    hosts: tuple[Name, ...] | None = None  # exactly one of hosts, primary and pair
    primary: Name | None = None
    pair: tuple[Name, ...] | None = None
    replicas: tuple[Name, ...] = ()
    ignore_worst: Count = 0
    signals: dict[str, Override] = {}
    concurrency: Concurrency | None = None
    rate: Rate | None = None
    budget: Budget | None = None


class DepthMark(Table):
    high: Level | None = None  # jobs
    low: Level | None = None
    for_: SecondsOrZero = msgspec.field(default=SecondsOrZero(60.0), name="for")
    keep_firing_for: SecondsOrZero = SecondsOrZero(0.0)


class AgeMark(Table):
    high: SecondsOrZero | None = None  # the oldest ready job's age
    low: SecondsOrZero | None = None
    for_: SecondsOrZero = msgspec.field(default=SecondsOrZero(60.0), name="for")
    keep_firing_for: SecondsOrZero = SecondsOrZero(0.0)


class WaterMarks(Table):
    depth: DepthMark | None = None
    age: AgeMark | None = None


class Queue(Table):
    resources: tuple[Name, ...] = ()
    watermarks: WaterMarks = msgspec.field(default_factory=WaterMarks)
    priority: Priority = "normal"


class Tasks(Table):
    modules: tuple[Name, ...] = ()  # $EASEOFF_TASK_MODULES replaces these


class Switches(Table):
    stale_after: Seconds = Seconds(86400.0)


class ScheduleTable(Table):
    """Checked further by feedback/schedules.py's make_schedule, as a task's @periodic is."""

    task: Name
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    cron: str | None = None
    every: Seconds | None = None
    timezone: str = "UTC"


class File(Table):
    redis: Redis = msgspec.field(default_factory=Redis)
    probe: Probe = msgspec.field(default_factory=Probe)
    backoff: Backoff = msgspec.field(default_factory=Backoff)
    mysql: MySQL = msgspec.field(default_factory=MySQL)
    resources: dict[str, Resource] = {}
    signals: dict[str, AnySignal] = {}
    queues: dict[str, Queue] = {}
    tasks: Tasks = msgspec.field(default_factory=Tasks)
    switches: Switches = msgspec.field(default_factory=Switches)
    schedules: dict[str, ScheduleTable] = {}
    levers: dict[str, dict[str, Any]] = {}  # each lever module's own table, read by its settings type


@cache
def file_type() -> type[File]:
    """The file's shape with every signal source's table in the union tagged by `source`: the
    built-in ones above and each a source module declares (feedback/signals/sources/, `TABLE`)."""
    from easeoff.feedback.signals.sources import source_tables  # the sources' registry, read at run time

    tables = (*BUILTIN_SIGNAL_TABLES, *source_tables())
    if len(tables) == len(BUILTIN_SIGNAL_TABLES):
        return File
    union = functools.reduce(operator.or_, tables)
    field: tuple[str, Any, Any] = ("signals", dict[str, union], msgspec.field(default_factory=dict))  # type: ignore[valid-type]
    return cast(type[File], msgspec.defstruct("File", [field], bases=(File,), forbid_unknown_fields=True, kw_only=True))
