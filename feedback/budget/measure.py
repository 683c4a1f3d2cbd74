"""One resource's budget as the controller takes it: `observe_budget` builds its BudgetObservation.

Built from what the fleet already stores — the resource's hosts' cached readings (their live
latency at the budget's quantile, lag, history list length: feedback/signals/live_latency.py and the
MySQL source), its leases and the work counter the controller bumps — plus one step of the
budget's own state (feedback/lua/budget_observe.lua), taken once per probe interval fleet-wide
however many callers ask: the heavy work finished since the last step, and the idle baseline,
learned only while nothing heavy runs on the resource.

Call it for every budgeted resource every interval, idle or not: the baseline is learned only
in the intervals it is called while the resource is quiet.

Fail closed: a host's reading missing, stale or failed, a value not in it, a window too small
for the quantile, or (for "1.5x") no baseline yet, is that ceiling unreadable (value None), and
the observation `stale`: the controller holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from redis import Redis

from easeoff.feedback import clock, keys
from easeoff.feedback.budget.observation import BudgetObservation, Ceiling
from easeoff.feedback.budget.prometheus import prometheus_latency
from easeoff.feedback.config import REPLICATING_ROLES, BudgetConfig, Config, ResourceConfig
from easeoff.feedback.levers.hosts_out import HOSTS_OUT_KEY, parse_hosts_out
from easeoff.feedback.lua import LuaScript
from easeoff.feedback.signals.live_latency import NOTE, live_key
from easeoff.feedback.signals.readings import Reading

HALF_LIFE = 3600.0  # seconds: the baseline follows the day's idle latency, not one quiet window
WARMUP_WINDOWS = 1  # idle windows learned from before the first baseline is reported (more in later quiet)
KEEP = 7 * 86400.0  # seconds a budget's state outlives its last step
BUDGET_OBSERVE = LuaScript.load(
    "easeoff.feedback",
    "budget_observe",
    argv=("interval_ms", "window_ms", "live", "half_life_ms", "max_step_ms", "warmup_ms", "keep_ms"),
)


def observe_budget(redis: Redis, config: Config, resource: str) -> BudgetObservation | None:
    """The resource's budget now; None when it has no budget."""
    spec = config.resources.get(resource)
    if spec is None or spec.budget is None:
        return None
    budget = spec.budget
    readings, out = _stored(redis, spec.hosts)
    now = clock.now()
    production = [h for h in spec.hosts if h not in out]
    unreadable: list[str] = []
    live: float | None = None
    if budget.latency is not None or budget.latency_multiple is not None:
        if budget.latency_source == "prometheus":
            live, why = prometheus_latency(budget, config.probe_timeout)
        else:
            live, why = worst(readings, production, live_key(budget), config, now, budget_note=True)
        if why:
            unreadable.append(f"latency: {why}")
    baseline, work_done, running, at = _step(redis, config, spec, budget, live)
    ceilings = []
    if budget.latency is not None:
        ceilings.append(Ceiling("latency", live, budget.latency))
    elif budget.latency_multiple is not None:
        if baseline is None:
            unreadable.append("latency: no idle baseline learned yet")
            ceilings.append(Ceiling("latency", None, 0.0))
        else:
            ceilings.append(Ceiling("latency", live, budget.latency_multiple * baseline))
    if budget.lag is not None:
        replicating = [h for h in production if spec.role(h) in REPLICATING_ROLES]
        lag, why = worst(readings, replicating, "lag", config, now)
        unreadable += [f"lag: {why}"] if why else []
        ceilings.append(Ceiling("lag", lag, budget.lag))
    if budget.history_list_length is not None:
        backlog, why = worst(readings, production, "history_list_length", config, now)
        unreadable += [f"history_list_length: {why}"] if why else []
        ceilings.append(Ceiling("history_list_length", backlog, budget.history_list_length))
    return BudgetObservation(
        resource=resource,
        at=at,
        ceilings=tuple(ceilings),
        baseline=baseline,
        running=running,
        work_done=work_done,
        stale=any(c.value is None for c in ceilings),
        unreadable=tuple(unreadable),
        needs_baseline=budget.latency_multiple is not None,
    )


def worst(
    readings: dict[str, Reading | None],
    hosts: Iterable[str],
    name: str,
    config: Config,
    now: float,
    budget_note: bool = False,
) -> tuple[float | None, str | None]:
    """The highest `name` over `hosts`, or None and why when any of them cannot say (fail closed):
    a signal's value, or with `budget_note` the live latency the probe keeps in its counters."""
    hosts = list(hosts)
    if not hosts:
        return None, "no host in production to read it from"
    found = []
    for host in hosts:
        reading = readings.get(host)
        if reading is None:
            return None, f"no reading of {host}"
        if reading.error is not None:
            return None, f"{host}: {reading.error}"
        age = now - reading.taken_at
        if age > config.stale_after:
            return None, f"{host}: reading {age:.1f}s old"
        value = (reading.counters if budget_note else reading.values).get(name)
        if value is None or not math.isfinite(value):
            note = reading.notes.get(NOTE if budget_note else name)
            return None, f"{host}: {note or 'not in its reading'}"
        found.append(value)
    return max(found), None


def _stored(redis: Redis, hosts: Iterable[str]) -> tuple[dict[str, Reading | None], frozenset[str]]:
    hosts = list(hosts)
    *raw, out = redis.mget([*(keys.reading_key(h) for h in hosts), HOSTS_OUT_KEY])
    readings = {h: (Reading.from_json(r) if r else None) for h, r in zip(hosts, raw, strict=True)}
    return readings, frozenset(parse_hosts_out(out))


def _step(
    redis: Redis, config: Config, spec: ResourceConfig, budget: BudgetConfig, live: float | None
) -> tuple[float | None, float, int, float]:
    """The fleet-once step: (baseline, work done since the last step, leases in use, Redis's time)."""
    window = budget.reading_lag  # quiet this long before a reading holds no heavy work at all
    args = BUDGET_OBSERVE.args(
        interval_ms=max(int(config.probe_interval * 1000), 1),
        window_ms=int(window * 1000),
        live="" if live is None else repr(float(live)),
        half_life_ms=int(HALF_LIFE * 1000),
        max_step_ms=int(window * 1000),  # one step is worth at most the window it read
        warmup_ms=int(WARMUP_WINDOWS * window * 1000),
        keep_ms=int(KEEP * 1000),
    )
    script_keys = [keys.budget_key(spec.name), keys.leases_key(spec.name), keys.work_key(spec.name)]
    script_keys.append(keys.duty_key(spec.name))
    baseline, work_done, running, now = BUDGET_OBSERVE.register(redis)(keys=script_keys, args=args)
    return (float(baseline) if baseline else None), float(work_done), int(running), float(now)
