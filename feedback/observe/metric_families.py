"""One function per metric family group: data in, Prometheus metric families out.

No I/O here — the exporter reads Redis once per scrape and hands the results to these
functions — so each family is easy to test and a new switch (a pause flag, a task limit)
slots in as one more function fed by one more read. Conventions: base units (`_seconds`),
counters end in `_total` on exposition, and every configured queue, host and resource is
exported even when empty or healthy (0, not absent), so alerts and graphs never see gaps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from easeoff.feedback.budget.controller_state import Why
from easeoff.feedback.budget.state import BudgetState
from easeoff.feedback.config import Config
from easeoff.feedback.levers.events import KINDS as EVENT_KINDS
from easeoff.feedback.levers.switches import Switches
from easeoff.feedback.observe import metric_names as names
from easeoff.feedback.observe.queue_stats import QueueStats
from easeoff.feedback.observe.watermark_monitor import WatermarkMonitor
from easeoff.feedback.observe.watermarks import phase_value
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.tally.counters import KINDS, Count
from easeoff.feedback.tally.job_times import Histogram
from easeoff.feedback.tally.shadow_tally import ShadowCount
from easeoff.feedback.tally.unknown_resources import UnknownResource
from easeoff.feedback.verdict.gate import global_findings, queue_reasons, resource_findings
from easeoff.feedback.verdict.shadow import ShadowJudge

COUNTER_HELP = {
    "started": "Jobs a gated worker started, by queue and task.",
    "finished": "Jobs that finished successfully, by queue and task.",
    "failed": "Jobs that failed, by queue, task and exception name (retries included).",
    "deferred": "Deferrals (a job put back for later: not a failure), by queue, task and reason.",
    "expired": "Jobs failed for being deferred past their cap, by queue, task and the last reason.",
    "abandoned": "Jobs whose worker died mid-job, by queue, task and what became of them (requeued or failed).",
    "retried": "Retries of jobs that failed on a transient error their task names (retry_on), by queue, task, error.",
}
REASONED = ("failed", "deferred", "expired", "abandoned", "retried")


def queue_families(stats: Sequence[QueueStats], held: Mapping[str, bool]) -> list[Metric]:
    """Depth by state, the oldest ready job's age, and whether the gate holds the queue."""
    ready = GaugeMetricFamily(names.QUEUE_READY, "Jobs ready to run (the queue's depth).", labels=["queue"])
    deferred = GaugeMetricFamily(
        names.QUEUE_DEFERRED, "Jobs deferred or scheduled for later (rq's scheduled registry).", labels=["queue"]
    )
    running = GaugeMetricFamily(names.QUEUE_RUNNING, "Jobs running now (rq's started registry).", labels=["queue"])
    failed = GaugeMetricFamily(names.QUEUE_FAILED, "Jobs in rq's failed registry.", labels=["queue"])
    age = GaugeMetricFamily(
        names.QUEUE_OLDEST_AGE, "Age of the oldest ready job in seconds; 0 when the queue is empty.", labels=["queue"]
    )
    held_family = GaugeMetricFamily(
        names.QUEUE_HELD,
        "1 while the gate holds the queue (its resources or global traffic are strained): nothing is dequeued.",
        labels=["queue"],
    )
    for s in stats:
        ready.add_metric([s.name], s.ready)
        deferred.add_metric([s.name], s.deferred)
        running.add_metric([s.name], s.running)
        failed.add_metric([s.name], s.failed)
        age.add_metric([s.name], s.oldest_ready_age_s)
        held_family.add_metric([s.name], 1 if held.get(s.name) else 0)
    return [ready, deferred, running, failed, age, held_family]


def queue_held(config: Config, queues: Iterable[str], snapshot: Snapshot, now: float) -> dict[str, bool]:
    """Whether a gated worker would skip each queue now (the worker's own pre-dequeue check)."""
    return {q: bool(queue_reasons(q, snapshot, config, now)) for q in queues}


def watermark_families(config: Config, monitor: WatermarkMonitor) -> list[Metric]:
    """The configured marks, the exporter's alarm states, and entries into each state."""
    marks = GaugeMetricFamily(
        names.WATERMARK,
        "A queue's configured water mark (depth in jobs, age in seconds).",
        labels=["queue", "measure", "mark"],
    )
    for queue in config.queues.values():
        for mark in queue.watermarks:
            for which, value in (("high", mark.high), ("low", mark.low)):
                if value is not None:
                    marks.add_metric([queue.name, mark.measure, which], value)
    alert = GaugeMetricFamily(
        names.WATERMARK_ALERT,
        "The exporter's evaluation of a water-mark alarm: 0 inactive, 1 pending, 2 firing.",
        labels=["queue", "measure", "mark", "alertname"],
    )
    for alarm, state in monitor.states():
        alert.add_metric([alarm.queue, alarm.measure, alarm.mark, alarm.alertname], phase_value(state.phase))
    transitions = CounterMetricFamily(
        names.WATERMARK_TRANSITIONS,
        "Water-mark alarm transitions into `state`, since the exporter started: events for annotations.",
        labels=["queue", "measure", "mark", "state"],
    )
    for alarm, phase, count in monitor.entered():
        transitions.add_metric([alarm.queue, alarm.measure, alarm.mark, phase], count)
    return [marks, alert, transitions]


def counter_families(counts: Mapping[str, Sequence[Count]]) -> list[Metric]:
    """Fleet-wide job counters from Redis, as the workers counted them in the moves' transactions.

    Not zero-filled: a series appears with its first job (queue and task are only known then)."""
    families: list[Metric] = []
    for kind in KINDS:
        labels = ["queue", "task", "reason"] if kind in REASONED else ["queue", "task"]
        family = CounterMetricFamily(names.jobs_counter(kind), COUNTER_HELP[kind], labels=labels)
        for row in counts.get(kind, []):
            values = [row.queue, row.task, row.reason] if kind in REASONED else [row.queue, row.task]
            family.add_metric(values, row.value)
        families.append(family)
    return families


def job_time_families(run: Sequence[Histogram], wait: Sequence[Histogram]) -> list[Metric]:
    """How long jobs ran, and waited before the run that ended, per queue and task (seconds).

    Not zero-filled, as the counters: a series appears with its first job."""
    out: list[Metric] = []
    for name, doc, histograms in (
        (names.JOB_RUN, "How long each job's run took, to its end (finished or failed), by queue and task.", run),
        (
            names.JOB_QUEUE_WAIT,
            "How long each job waited from its enqueue to the start of the run that ended (deferrals included).",
            wait,
        ),
    ):
        family = HistogramMetricFamily(name, doc, labels=["queue", "task"])
        for h in histograms:
            family.add_metric([h.queue, h.task], buckets=list(h.buckets), sum_value=h.sum)
        out.append(family)
    return out


def build_info_family(version: str) -> Metric:
    info = GaugeMetricFamily(names.BUILD_INFO, "1, labelled with the running easeoff's version.", labels=["version"])
    info.add_metric([version], 1)
    return info


def worker_families(workers: int) -> list[Metric]:
    return [GaugeMetricFamily(names.WORKERS, "rq workers registered in Redis (gated or not).", value=workers)]


def signal_families(config: Config, snapshot: Snapshot, now: float) -> list[Metric]:
    """Each probe target's signal values, thresholds and hysteresis state, and the reading's health."""
    value = GaugeMetricFamily(
        names.SIGNAL_VALUE,
        "The latest reading of a strain signal (host is a MySQL host, or app:/prometheus: for traffic).",
        labels=["host", "signal"],
    )
    threshold = GaugeMetricFamily(
        names.SIGNAL_THRESHOLD,
        "A signal's threshold for this host: strained above high, healthy below low, jobs stop above critical.",
        labels=["host", "signal", "level"],
    )
    strained = GaugeMetricFamily(
        names.SIGNAL_STRAINED,
        "1 while the signal is strained on this host (with hysteresis).",
        labels=["host", "signal"],
    )
    age = GaugeMetricFamily(names.READING_AGE, "Seconds since the target was last probed.", labels=["host"])
    ok = GaugeMetricFamily(
        names.PROBE_OK, "1 if the latest probe of the target succeeded, 0 if it failed or never ran.", labels=["host"]
    )
    for target in config.probe_targets:
        reading = snapshot.get(target)
        ok.add_metric([target], 1 if reading is not None and reading.error is None else 0)
        if reading is None:
            continue
        age.add_metric([target], max(0.0, now - reading.taken_at))
        for name, number in reading.signal_values().items():
            value.add_metric([target, name], number)
            strained.add_metric([target, name], 1 if reading.strained.get(name) else 0)
        for signal in config.signals.values():
            if signal.name not in reading.values:
                continue
            limits = config.thresholds(signal.name, target)
            for level, limit in (("high", limits.high), ("low", limits.low), ("critical", limits.critical)):
                if limit is not None:
                    threshold.add_metric([target, signal.name, level], limit)
    return [value, threshold, strained, age, ok]


def verdict_families(
    config: Config, snapshot: Snapshot, now: float, unknown: Sequence[UnknownResource] = ()
) -> list[Metric]:
    """What the gate decides now, per resource and globally, with its reasons counted by kind.
    A resource jobs named that the config does not declare shows as held for `unknown_resource`."""
    global_reasons, _ = global_findings(snapshot, config, now)
    held = GaugeMetricFamily(
        names.RESOURCE_HELD,
        "1 while the gate holds work on the resource (its own strain or global traffic), 0 while it admits.",
        labels=["resource"],
    )
    reasons = GaugeMetricFamily(
        names.RESOURCE_HOLD_REASONS,
        "Findings holding the resource, by kind (the signal, probe_error, host_out, ...); global traffic aside.",
        labels=["resource", "reason"],
    )
    critical = GaugeMetricFamily(
        names.RESOURCE_CRITICAL,
        "Signals above their critical mark on the resource: running resumable jobs stop at their next checkpoint.",
        labels=["resource"],
    )
    for name, resource in config.resources.items():
        found = resource_findings(resource, snapshot, config, now)
        held.add_metric([name], 1 if found.reasons or global_reasons else 0)
        for kind, count in sorted(Counter(str(r.kind) for r in found.reasons).items()):
            reasons.add_metric([name, kind], count)
        critical.add_metric([name], len(found.critical))
    for missing in unknown:
        held.add_metric([missing.name], 1)
        reasons.add_metric([missing.name, "unknown_resource"], 1)
        critical.add_metric([missing.name], 0)
    global_held = GaugeMetricFamily(
        names.GLOBAL_HELD,
        "1 while global traffic signals hold every queue.",
        value=1 if global_reasons else 0,
    )
    return [held, reasons, critical, global_held]


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
            ratio.add_metric([switch.scope.removeprefix("task:")], switch.ratio or 0.0)
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


def budget_families(budgets: Mapping[str, BudgetState], now: float) -> list[Metric]:
    """Each budget as its controller last saw and set it. The limit it chose is
    easeoff_concurrency_limit; a value not known (an unreadable ceiling, no baseline yet, never
    stepped) is absent rather than 0, which would read as a fast site."""
    ceiling = GaugeMetricFamily(
        names.BUDGET_CEILING,
        "The most the budget allows, absolute (latency and lag in seconds, a 1.5x latency resolved against the "
        "baseline; history_list_length in transactions).",
        labels=["resource", "ceiling"],
    )
    observed = GaugeMetricFamily(
        names.BUDGET_OBSERVED,
        "The value of each budgeted quantity the controller saw at its last step (same units as the ceiling).",
        labels=["resource", "ceiling"],
    )
    baseline = GaugeMetricFamily(
        names.BUDGET_BASELINE,
        "The live latency at the budget's quantile learned while no heavy work ran (the idle baseline).",
        labels=["resource"],
    )
    slack = GaugeMetricFamily(
        names.BUDGET_SLACK,
        "1 - observed/ceiling of the tightest ceiling at the last step: 0.3 is 30% unspent, below 0 a breach.",
        labels=["resource"],
    )
    level = GaugeMetricFamily(
        names.BUDGET_LEVEL,
        "The controller's level: at 1 or more the concurrency, below 1 the duty cycle at one job; 0 while learning.",
        labels=["resource"],
    )
    duty = GaugeMetricFamily(
        names.BUDGET_DUTY,
        "The pace in force: the share of time one heavy job may run (1: full pace, no pause between jobs).",
        labels=["resource"],
    )
    decision = GaugeMetricFamily(
        names.BUDGET_DECISION,
        "1 for the reason of the controller's last decision (grow, cut_breach, hold_stale, ...), 0 for the others.",
        labels=["resource", "why"],
    )
    age = GaugeMetricFamily(
        names.BUDGET_STEP_AGE,
        "Seconds since the controller last stepped (once per probe interval while a worker probes).",
        labels=["resource"],
    )
    for name, b in budgets.items():
        for c in b.ceilings:
            if c.limit is not None:
                ceiling.add_metric([name, c.name], c.limit)
            if c.value is not None:
                observed.add_metric([name, c.name], c.value)
        if b.baseline is not None:
            baseline.add_metric([name], b.baseline)
        if b.slack is not None:
            slack.add_metric([name], b.slack)
        level.add_metric([name], b.last.level if b.last is not None else 0.0)
        duty.add_metric([name], b.pace)
        for why in Why:
            decision.add_metric([name, str(why)], 1 if b.last is not None and b.last.why == why else 0)
        stepped = b.age(now)
        if stepped is not None:
            age.add_metric([name], stepped)
    return [ceiling, observed, baseline, slack, level, duty, decision, age]


def exporter_families(redis_up: bool, duration_s: float) -> list[Metric]:
    return [
        GaugeMetricFamily(
            names.REDIS_UP, "1 if this scrape could read Redis; 0 and nothing else if not.", value=int(redis_up)
        ),
        GaugeMetricFamily(names.SCRAPE_DURATION, "Seconds this scrape spent reading Redis.", value=duration_s),
    ]


def shadow_families(config: Config, snapshot: Snapshot, now: float, counts: Sequence[ShadowCount]) -> list[Metric]:
    """Shadow verdicts, apart from the real ones: the signals on trial, whether they would hold each
    resource now, and the jobs they would have deferred (ever, and in the last hour)."""
    on_trial = GaugeMetricFamily(
        names.SHADOW_SIGNAL, "1 for each signal in shadow mode: judged and counted, holding nothing.", labels=["signal"]
    )
    for signal in config.signals.values():
        if signal.shadow:
            on_trial.add_metric([signal.name], 1)
    holding = GaugeMetricFamily(
        names.SHADOW_HOLDING,
        "1 while the policies on trial (shadow signals, shadow thresholds) would hold the resource beyond the gate.",
        labels=["resource"],
    )
    judge = ShadowJudge()
    for name in config.resources:
        holding.add_metric([name], 1 if judge.holds(name, snapshot, config, now) else 0)
    total = CounterMetricFamily(
        names.SHADOW_DEFERRALS,
        "Jobs the policies on trial would have deferred (the real gate admitted them), by resource and signal.",
        labels=["resource", "signal"],
    )
    last_hour = GaugeMetricFamily(
        names.SHADOW_DEFERRALS_HOUR,
        "Jobs the policies on trial would have deferred in the last hour.",
        labels=["resource", "signal"],
    )
    for count in counts:
        total.add_metric([count.resource, count.signal], count.total)
        last_hour.add_metric([count.resource, count.signal], count.last_hour)
    return [on_trial, holding, total, last_hour]
