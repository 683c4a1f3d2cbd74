"""One function per metric family group: data in, Prometheus metric families out. Here the
queues, the jobs through them and the exporter itself; beside it gate_families (signals, the
gate's holds, shadow verdicts), lever_families (hosts, switches, rates, limits) and
budget_families.

No I/O here — the exporter reads Redis once per scrape and hands the results to these
functions — so each family is easy to test and a new switch (a pause flag, a task limit)
slots in as one more function fed by one more read. Conventions: base units (`_seconds`),
counters end in `_total` on exposition, and every configured queue, host and resource is
exported even when empty or healthy (0, not absent), so alerts and graphs never see gaps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from easeoff.feedback.config import Config
from easeoff.feedback.observe import metric_names as names
from easeoff.feedback.observe.queue_stats import QueueStats
from easeoff.feedback.observe.watermark_monitor import WatermarkMonitor
from easeoff.feedback.observe.watermarks import phase_value
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.tally.counters import KINDS, Count
from easeoff.feedback.tally.job_times import Histogram
from easeoff.feedback.verdict.gate import queue_reasons

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


def exporter_families(redis_up: bool, duration_s: float) -> list[Metric]:
    return [
        GaugeMetricFamily(
            names.REDIS_UP, "1 if this scrape could read Redis; 0 and nothing else if not.", value=int(redis_up)
        ),
        GaugeMetricFamily(names.SCRAPE_DURATION, "Seconds this scrape spent reading Redis.", value=duration_s),
    ]
