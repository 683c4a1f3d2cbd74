"""The metric families of the levers that hold or pace work: hosts ops took out, resources
cooling with their parked jobs, ops' switches (pause, throttle, threshold) with their age and
the events logged, fleet-wide rates, and adaptive concurrency limits.

Pure, as every *_families module: the exporter reads Redis once per scrape and hands the
results here. Configured hosts and resources are exported even when idle (0, not absent).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from easeoff.feedback.config import Config
from easeoff.feedback.levers.events import KINDS as EVENT_KINDS
from easeoff.feedback.levers.switches import Switches
from easeoff.feedback.observe import metric_names as names


def switch_families(
    config: Config,
    hosts_out: Mapping[str, str],
    cooling: Mapping[str, bool],
    parked: Mapping[str, int],
) -> list[Metric]:
    """Switches: hosts ops took out of production, and resources cooling down with parked jobs."""
    out = GaugeMetricFamily(names.HOST_OUT, "1 while ops have the host out of production.", labels=["host"])
    for host in dict.fromkeys([*config.hosts, *hosts_out]):
        out.add_metric([host], 1 if host in hosts_out else 0)
    cool = GaugeMetricFamily(
        names.RESOURCE_COOLING,
        "1 while the resource cools down: its deferred jobs stay parked until it is healthy.",
        labels=["resource"],
    )
    parked_family = GaugeMetricFamily(
        names.RESOURCE_PARKED, "Deferred jobs parked on the resource, waiting for it to clear.", labels=["resource"]
    )
    for name in config.resources:
        cool.add_metric([name], 1 if cooling.get(name) else 0)
        parked_family.add_metric([name], parked.get(name, 0))
    return [out, cool, parked_family]


def contingency_families(
    switches: Switches, now: float, event_counts: Mapping[str, int], stale_after: float
) -> list[Metric]:
    """Ops' switches in force (pause, throttle, threshold), how long each has been on, and the
    events logged, by kind."""
    active = GaugeMetricFamily(
        names.SWITCH_ACTIVE, "1 for each contingency switch in force, by kind and scope.", labels=["kind", "scope"]
    )
    expiry = GaugeMetricFamily(
        names.SWITCH_EXPIRY, "When a switch with a TTL lapses (unix seconds).", labels=["kind", "scope"]
    )
    ratio = GaugeMetricFamily(
        names.SWITCH_THROTTLE_RATIO, "Share of the task's jobs a throttle refuses (0 when none).", labels=["task"]
    )
    age = GaugeMetricFamily(
        names.SWITCH_AGE, "Seconds since the switch was turned on (EaseoffSwitchStale).", labels=["kind", "scope"]
    )
    stale_limit = GaugeMetricFamily(
        names.SWITCH_STALE_AFTER, "A switch on longer than this many seconds is stale ([switches] stale_after)."
    )
    stale_limit.add_metric([], stale_after)
    for switch in switches.live(now):
        labels = [switch.label_kind, switch.scope]
        active.add_metric(labels, 1)
        age.add_metric(labels, switch.age(now))
        if switch.expires_at is not None:
            expiry.add_metric(labels, switch.expires_at)
        if switch.kind == "throttle":
            ratio.add_metric([switch.target.name], switch.ratio or 0.0)
    logged = CounterMetricFamily(
        names.EVENTS,
        "Events logged (switches, hosts, annotations, verdict flips), by kind: Grafana annotates on changes.",
        labels=["kind"],
    )
    for kind in dict.fromkeys([*EVENT_KINDS, *event_counts]):
        logged.add_metric([kind], event_counts.get(kind, 0))
    return [active, age, stale_limit, expiry, ratio, logged]


def rate_families(rates: Mapping[str, tuple[float, int]]) -> list[Metric]:
    """Fleet-wide rates (`rate = "120/min"`): the rate, and the jobs deferred to a reserved start."""
    limit = GaugeMetricFamily(names.RATE_LIMIT, "The resource's fleet-wide rate of job starts.", labels=["scope"])
    waiting = GaugeMetricFamily(
        names.RATE_WAITING, "Jobs over the rate, deferred to the start reserved for them.", labels=["scope"]
    )
    for scope, (per_second, waiting_jobs) in rates.items():
        limit.add_metric([scope], per_second)
        waiting.add_metric([scope], waiting_jobs)
    return [limit, waiting]


def limit_families(limits: Mapping[str, tuple[int, int]]) -> list[Metric]:
    """Adaptive per-resource concurrency: the current limit and the leases held against it."""
    limit = GaugeMetricFamily(
        names.CONCURRENCY_LIMIT, "The resource's current fleet-wide concurrency limit (AIMD).", labels=["resource"]
    )
    leases = GaugeMetricFamily(
        names.CONCURRENCY_LEASES, "Jobs holding a live concurrency lease on the resource.", labels=["resource"]
    )
    for name, (current, in_use) in limits.items():
        limit.add_metric([name], current)
        leases.add_metric([name], in_use)
    return [limit, leases]
