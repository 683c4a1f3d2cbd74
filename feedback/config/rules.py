"""The rules between settings of signals, resources and queues: what one value cannot state
alone (low below high, a resource naming a known host, a budget's lag needing replicas)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from easeoff.feedback.config import schema
from easeoff.feedback.config.errors import ConfigError, Problem, env_name
from easeoff.feedback.config.model import (
    SCRAPE_INTERVAL,
    BudgetConfig,
    ConcurrencyConfig,
    MySQLHost,
    QueueConfig,
    ResourceConfig,
    Shape,
    SignalConfig,
    Thresholds,
    WaterMark,
)


class Rules:
    """Each check raises `fail(key, problem)`, the key as a list of the file's names."""

    def __init__(self, fail: Callable[[list[str], str], ConfigError], environ: Mapping[str, str]) -> None:
        self.fail = fail
        self.environ = environ

    def thresholds(self, high: float, low: float, critical: float | None, key: list[str]) -> Thresholds:
        if low > high:
            raise self.fail([*key, "low"], f"must not exceed high ({high:g})")
        if critical is not None and critical < high:
            raise self.fail([*key, "critical"], f"must not be below high ({high:g})")
        return Thresholds(high, low, critical)

    def signals(self, tables: Mapping[str, schema.AnySignal]) -> dict[str, SignalConfig]:
        signals: dict[str, SignalConfig] = {}
        for name, t in tables.items():
            key = ["signals", name]
            limits = self.thresholds(t.high, t.low, t.critical, key)
            try:
                own = t.settings(name, self.environ)
            except Problem as exc:
                raise self.fail([*key, exc.field] if exc.field else key, exc.problem) from None
            signals[name] = SignalConfig(
                name=name,
                high=limits.high,
                low=limits.low,
                critical=limits.critical,
                fail_closed=t.fail_closed,
                source=str(t.__struct_config__.tag),
                traffic=t.traffic,
                resources=t.resources,
                predict=float(t.predict) if t.predict is not None else None,
                mode=t.mode,
                **own,  # each source's own fields, as its table gives them
            )
        return signals

    def resources(
        self,
        tables: Mapping[str, schema.Resource],
        hosts: Mapping[str, MySQLHost],
        signals: Mapping[str, SignalConfig],
    ) -> dict[str, ResourceConfig]:
        resources = {name: self.resource(name, t, hosts, signals) for name, t in tables.items()}
        self.check_overrides_agree(resources)
        for signal in signals.values():
            for resource in signal.resources or ():
                if resource not in resources:
                    raise self.fail(["signals", signal.name, "resources"], f"names unknown resource {resource!r}")
        return resources

    def resource(
        self, name: str, t: schema.Resource, hosts: Mapping[str, MySQLHost], signals: Mapping[str, SignalConfig]
    ) -> ResourceConfig:
        key = ["resources", name]
        shapes: list[tuple[Shape, tuple[str, ...] | None]] = [
            ("hosts", t.hosts),
            ("primary", (t.primary,) if t.primary is not None else None),
            ("pair", t.pair),
        ]
        given = [(shape, names) for shape, names in shapes if names is not None]
        if len(given) != 1:
            raise self.fail(key, "needs exactly one of hosts, primary or pair")
        shape, writers = given[0]
        if shape == "pair" and len(writers) != 2:
            raise self.fail([*key, "pair"], "must name exactly two hosts")
        for field_name, names in ((shape, writers), ("replicas", t.replicas)):
            for host in names:
                if host not in hosts:
                    raise self.fail([*key, field_name], f"names unknown host {host!r} (not under [mysql.hosts])")
        if set(writers) & set(t.replicas):
            raise self.fail([*key, "replicas"], "must not name a host that is also a writer")
        overrides = {}
        for signal, limits in t.signals.items():
            if signal not in signals:
                raise self.fail([*key, "signals", signal], "overrides a signal not configured under [signals]")
            overrides[signal] = self.thresholds(limits.high, limits.low, limits.critical, [*key, "signals", signal])
        replicating = bool(t.replicas) or shape == "pair"
        return ResourceConfig(
            name=name,
            writers=writers,
            replicas=t.replicas,
            shape=shape,
            ignore_worst=t.ignore_worst,
            overrides=overrides,
            concurrency=self.concurrency(t.concurrency, [*key, "concurrency"]),
            rate=t.rate,
            budget=self.budget(t.budget, [*key, "budget"], name, replicating) if t.budget is not None else None,
        )

    def concurrency(self, t: schema.Concurrency | None, key: list[str]) -> ConcurrencyConfig | None:
        if t is None:
            return None
        if t.min > t.max:
            raise self.fail([*key, "min"], f"must not exceed max ({t.max})")
        return ConcurrencyConfig(min=t.min, max=t.max, decrease=t.decrease)

    def budget(self, t: schema.Budget, key: list[str], resource: str, replicating: bool) -> BudgetConfig:
        url = self.environ.get(f"EASEOFF_BUDGET_{env_name(resource)}_PROMETHEUS_URL") or t.prometheus_url
        metric = t.metric
        if t.latency_source == "prometheus":
            if metric is None:
                raise self.fail([*key, "metric"], 'missing: the app\'s histogram, for latency_source = "prometheus"')
            if url is None or urlsplit(url).scheme not in ("http", "https"):
                raise self.fail([*key, "prometheus_url"], "must be an http:// or https:// URL")
        else:
            only_with_prometheus = ("prometheus_url", t.prometheus_url), ("metric", t.metric)
            for only, given in (*only_with_prometheus, ("scrape_interval", t.scrape_interval)):
                if given is not None:
                    raise self.fail([*key, only], 'applies only with latency_source = "prometheus"')
            metric, url = None, None
        if t.lag is not None and not replicating:
            raise self.fail([*key, "lag"], "needs replicas (or a pair): this resource has no replication to lag")
        if t.latency is None and t.lag is None and t.history_list_length is None:
            raise self.fail(key, "needs latency, lag or history_list_length")
        return BudgetConfig(
            latency=t.latency.seconds if t.latency is not None else None,
            latency_multiple=t.latency.multiple if t.latency is not None else None,
            quantile=t.quantile,
            latency_source=t.latency_source,
            window=float(t.window),
            lag=float(t.lag) if t.lag is not None else None,
            history_list_length=t.history_list_length,
            prometheus_url=url,
            metric=metric,
            scrape_interval=float(t.scrape_interval) if t.scrape_interval is not None else SCRAPE_INTERVAL,
        )

    def check_overrides_agree(self, resources: Mapping[str, ResourceConfig]) -> None:
        """A host in two resources must not get two different thresholds for one signal."""
        seen: dict[tuple[str, str], tuple[str, Thresholds]] = {}
        for resource in resources.values():
            for signal, limits in resource.overrides.items():
                for host in resource.hosts:
                    earlier = seen.setdefault((host, signal), (resource.name, limits))
                    if earlier[1] != limits:
                        raise self.fail(
                            ["resources", resource.name, "signals", signal],
                            f"host {host!r} already has other thresholds from resource {earlier[0]!r}",
                        )

    def queues(self, tables: Mapping[str, schema.Queue], resources: Mapping[str, object]) -> dict[str, QueueConfig]:
        queues: dict[str, QueueConfig] = {}
        for name, t in tables.items():
            key = ["queues", name]
            for resource in t.resources:
                if resource not in resources:
                    raise self.fail([*key, "resources"], f"names unknown resource {resource!r}")
            marks = []
            for measure, mark in (("depth", t.watermarks.depth), ("age", t.watermarks.age)):
                if mark is not None:
                    marks.append(self.watermark(measure, mark, [*key, "watermarks", measure]))
            queues[name] = QueueConfig(name=name, resources=t.resources, watermarks=tuple(marks), priority=t.priority)
        return queues

    def watermark(self, measure: str, t: schema.DepthMark | schema.AgeMark, key: list[str]) -> WaterMark:
        high = float(t.high) if t.high is not None else None
        low = float(t.low) if t.low is not None else None
        if high is None and low is None:
            raise self.fail(key, "needs high, low or both")
        if high is not None and low is not None and low > high:
            raise self.fail([*key, "low"], f"must not exceed high ({high:g})")
        return WaterMark(
            measure=measure,  # type: ignore[arg-type]  # "depth" or "age", from the loop above
            high=high,
            low=low,
            for_s=float(t.for_),
            keep_firing_for_s=float(t.keep_firing_for),
        )
