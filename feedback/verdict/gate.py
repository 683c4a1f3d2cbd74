"""The verdict: may work on these resources run now? A pure function of its inputs.

No I/O here: a snapshot of readings comes in, a verdict goes out, so every rule is
unit-tested without servers, and a worker, `status` and `probe` all judge alike.

A resource is judged through its topology: its writers (a primary, or both halves
of a master-master pair, which must both be reachable, replicating and in
production) and its replicas (aggregated worst-first, with the N worst optionally
ignored). Global traffic signals hold every resource. Signals in shadow mode are left out
here: feedback/verdict/shadow.py judges them, and ops' shadow thresholds, apart.

Fail closed: a host with no usable reading (unreachable, stale, never read) holds what it
gates whichever signals apply to it; a signal's `fail_closed = false` lets only that signal's
own failed read (its query failed, its traffic source errored) pass; a value that is not a
finite number is strain, with a reason that says so.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import msgspec

from easeoff.feedback.config import (
    HOST_SIGNALS,
    REPLICA_SIGNALS,
    REPLICATING_ROLES,
    Config,
    ResourceConfig,
    SignalConfig,
    Thresholds,
)
from easeoff.feedback.levers.hosts_out import HOSTS_OUT_KEY, HostsOut
from easeoff.feedback.reasons import ADMIT, Kind, Reason, Verdict
from easeoff.feedback.scopes import Scope
from easeoff.feedback.signals.hysteresis import not_a_number
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.verdict.backoff import deferral_delay


class HostFindings(msgspec.Struct, frozen=True):
    reasons: tuple[Reason, ...]
    critical: tuple[Reason, ...]
    severity: float  # for ordering replicas worst-first: failures rank above any value


NOTHING = HostFindings((), (), 0.0)


def judge(
    resources: Iterable[str],
    snapshot: Snapshot,
    config: Config,
    now: float,
    deferrals: int = 0,
    rng: random.Random | None = None,
) -> Verdict:
    """Admit, or defer with reasons and a backoff delay that grows with `deferrals`. Without an
    `rng` (status, reports: nothing waits on the delay) the delay is its floor, one interval."""
    reasons, critical = assess_resources(resources, snapshot, config, now)
    if not reasons:
        return ADMIT
    delay = config.probe_interval
    if rng is not None:
        delay = deferral_delay(deferrals, config.backoff.base, config.backoff.cap, config.probe_interval, rng)
    return Verdict(admit=False, reasons=tuple(reasons), delay=delay, critical=tuple(critical))


def strain_reasons(resources: Iterable[str], snapshot: Snapshot, config: Config, now: float) -> list[Reason]:
    """Every reason work on `resources` must wait (global traffic included); empty when all is well."""
    return assess_resources(resources, snapshot, config, now)[0]


def queue_reasons(queue: str, snapshot: Snapshot, config: Config, now: float) -> list[Reason]:
    """Why nothing may be dequeued from `queue` now: ops paused it, or its resources are strained."""
    paused = snapshot.switches.paused(Scope.queue(queue), now)
    return ([paused] if paused else []) + strain_reasons(config.queue_resources(queue), snapshot, config, now)


def task_reasons(task: str, snapshot: Snapshot, now: float, rng: random.Random) -> list[Reason]:
    """Why this one job of `task` must wait although its resources are fine: paused or throttled."""
    paused = snapshot.switches.paused(Scope.task(task), now)
    if paused:
        return [paused]
    throttled = snapshot.switches.throttled(task, now, rng)
    return [throttled] if throttled else []


def assess_resources(
    resources: Iterable[str], snapshot: Snapshot, config: Config, now: float
) -> tuple[list[Reason], list[Reason]]:
    config = live_config(config, snapshot, now)
    reasons, critical = global_findings(snapshot, config, now)
    for name in dict.fromkeys(resources):
        resource = config.resources.get(name)
        if resource is None:
            reasons.append(Reason(Kind.UNKNOWN_RESOURCE, name))
            continue
        found = resource_findings(resource, snapshot, config, now)
        reasons += [r for r in found.reasons if r not in reasons]
        critical += [c for c in found.critical if c not in critical]
    return reasons, critical


def global_findings(snapshot: Snapshot, config: Config, now: float) -> tuple[list[Reason], list[Reason]]:
    """Global traffic, or ops pausing everything: no heavy work at all."""
    config = live_config(config, snapshot, now)
    paused = snapshot.switches.paused(Scope.everything(), now)
    reasons: list[Reason] = [paused] if paused else []
    if isinstance(snapshot.hosts_out, HostsOut) and snapshot.hosts_out.unreadable:
        detail = "not understood by this easeoff: held until fixed or replaced"
        reasons.append(Reason(Kind.HOSTS_OUT_UNREADABLE, HOSTS_OUT_KEY, detail=detail, waits_for="delay"))
    critical: list[Reason] = []
    for signal in config.signals.values():
        if signal.is_global_traffic and not signal.shadow:
            found = traffic_findings(signal, snapshot, config, now)
            reasons += found.reasons
            critical += found.critical
    return reasons, critical


def live_config(config: Config, snapshot: Snapshot, now: float) -> Config:
    """The config with ops' live threshold overrides applied (the same object when there are none)."""
    return snapshot.switches.apply(config, now)


def resource_findings(resource: ResourceConfig, snapshot: Snapshot, config: Config, now: float) -> HostFindings:
    config = live_config(config, snapshot, now)
    resource = config.resources.get(resource.name, resource)
    paused = snapshot.switches.paused(Scope.on_resource(resource.name), now)
    reasons: list[Reason] = [paused] if paused else []
    critical: list[Reason] = []
    for host in resource.writers:
        found = host_findings(host, resource, snapshot, config, now)
        reasons += found.reasons
        critical += found.critical
    replica_findings = [
        host_findings(host, resource, snapshot, config, now)
        for host in resource.replicas
        if host not in snapshot.hosts_out  # out of production: not part of the aggregate
    ]
    troubled = sorted((f for f in replica_findings if f.reasons), key=lambda f: f.severity, reverse=True)
    for found in troubled[resource.ignore_worst :]:
        reasons += found.reasons
    for found in replica_findings:
        critical += found.critical
    for signal in config.signals.values():
        if signal.is_traffic and signal.resources and resource.name in signal.resources and not signal.shadow:
            found = traffic_findings(signal, snapshot, config, now)
            reasons += found.reasons
            critical += found.critical
    return HostFindings(tuple(reasons), tuple(critical), 0.0)


def applicable_signals(role: str, resource: ResourceConfig, config: Config) -> list[SignalConfig]:
    """Which configured signals a host answers for in this resource, given its role."""
    chosen = []
    for signal in config.signals.values():
        if signal.resources is not None and resource.name not in signal.resources:
            continue
        if (
            (signal.source == "mysql" and signal.name in HOST_SIGNALS)
            or (signal.source == "mysql" and signal.name in REPLICA_SIGNALS and role in REPLICATING_ROLES)
            or (signal.source == "sql" and role != "replica")
        ):
            chosen.append(signal)
    return chosen


def host_findings(host: str, resource: ResourceConfig, snapshot: Snapshot, config: Config, now: float) -> HostFindings:
    role = resource.role(host)
    reading = snapshot.get(host)
    signals = [s for s in applicable_signals(role, resource, config) if not s.shadow]  # shadow ones hold nothing
    reasons: list[Reason] = []
    if host in snapshot.hosts_out and role != "replica":
        reasons.append(Reason(Kind.HOST_OUT, host, detail=snapshot.hosts_out[host]))
    failure = reading_failure(host, reading, config, now)
    if failure:
        # No reading at all (unreachable, timed out, stale, never read): nothing is known about
        # the host, so it holds whatever signals apply to it, shadow and `fail_closed = false`
        # ones included. Those flags speak for one signal's own failed read on a host that
        # answered (signal_findings), not for a host that did not answer.
        reasons.append(failure)
        return HostFindings(tuple(reasons), (), math.inf)
    assert reading is not None
    if role in REPLICATING_ROLES and reading.strained.get("replication"):
        detail = reading.notes.get("replication", "replication threads not running")
        reasons.append(Reason(Kind.REPLICATION, host, detail=detail))
    critical: list[Reason] = []
    severity = math.inf if reasons else 0.0
    for signal in signals:
        found = signal_findings(signal, host, reading, config.thresholds(signal.name, host))
        reasons += found.reasons
        critical += found.critical
        severity = max(severity, found.severity)
    return HostFindings(tuple(reasons), tuple(critical), severity)


def reading_failure(target: str, reading: Reading | None, config: Config, now: float) -> Reason | None:
    """Missing, stale and failed probes: strain that says why (fail closed)."""
    if reading is None:
        return Reason(Kind.NO_READING, target)
    age = now - reading.taken_at
    limit = stale_limit(reading, config)
    if age > limit:
        return Reason(Kind.STALE_READING, target, value=age, threshold=limit)
    if reading.error is not None:
        return Reason(Kind.PROBE_ERROR, target, detail=reading.error)
    return None


def stale_limit(reading: Reading, config: Config) -> float:
    """`stale_after`, and for a reading taken at the dormant pace as much longer as its prober's
    lease is (2 x the paces' difference): a dormant host is not held as stale while its prober
    lives, and one whose prober died is taken over before it goes stale, as at full pace. No
    job is admitted on a dormant reading however young (`dormant_reasons`)."""
    if not reading.dormant:
        return config.stale_after
    return config.stale_after + 2 * max(config.probe_dormant_interval - config.probe_interval, 0.0)


def dormant_reasons(hosts: Iterable[str], snapshot: Snapshot, config: Config, now: float) -> list[Reason]:
    """A job may not run on a reading taken at the dormant pace: its host was read seconds ago,
    not within an interval. The job waits for one fresh probe (signals/demand.py); if none came,
    it defers, its reading stale for a job."""
    return [
        Reason(Kind.STALE_READING, host, value=now - r.taken_at, threshold=config.probe_interval)
        for host in hosts
        if (r := snapshot.get(host)) is not None and r.dormant
    ]


def traffic_findings(signal: SignalConfig, snapshot: Snapshot, config: Config, now: float) -> HostFindings:
    """An app or Prometheus traffic signal, read from its own cache entry."""
    reading = snapshot.get(signal.source_key)
    failure = reading_failure(signal.source_key, reading, config, now)
    if failure:
        return HostFindings((failure,) if signal.fail_closed else (), (), math.inf)
    assert reading is not None
    return signal_findings(signal, signal.source, reading, signal.thresholds)


def signal_findings(signal: SignalConfig, where: str, reading: Reading, limits: Thresholds) -> HostFindings:
    """One signal in one good reading: strained (with hysteresis), critical, or failed to read."""
    value = reading.values.get(signal.name)
    if value is None:
        note = reading.notes.get(signal.name)
        if note and signal.fail_closed:
            return HostFindings((Reason(Kind.SIGNAL, where, detail=note, name=signal.name),), (), math.inf)
        return NOTHING
    unjudgeable = not_a_number(value)
    if unjudgeable is not None:  # NaN compares false with everything: it would read as healthy
        return HostFindings((Reason(Kind.SIGNAL, where, detail=unjudgeable, name=signal.name),), (), math.inf)
    critical: tuple[Reason, ...] = ()
    if limits.critical is not None and value > limits.critical:
        critical = (Reason(Kind.SIGNAL, where, value, limits.critical, "critical", name=signal.name),)
    if not reading.strained.get(signal.name, False):
        return HostFindings((), critical, 0.0)
    eta = reading.predictions.get(signal.name)
    if value > limits.high:
        reason = Reason(Kind.SIGNAL, where, value, limits.high, "high", name=signal.name)
    elif eta is not None:
        reason = Reason(Kind.SIGNAL, where, value, limits.high, "predicted", f"in {eta:.1f}s", name=signal.name)
    else:
        reason = Reason(Kind.SIGNAL, where, value, limits.low, "low", name=signal.name)
    severity = value / limits.high if limits.high > 0 else math.inf
    return HostFindings((reason,), critical, severity)
