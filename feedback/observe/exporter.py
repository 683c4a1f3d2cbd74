"""The Prometheus exporter: a custom collector that reads Redis on every scrape.

Nothing is cached between scrapes, so what Prometheus sees is what Redis holds — the
fleet's counters, queues, cached readings and switches — whichever workers wrote it.
A scrape costs a fixed handful of pipelined round trips, O(1) in queue depth (LLEN,
ZCARD, the head job's enqueue time) and O(queues + hosts + resources) overall.

The exporter also evaluates every queue's water marks (feedback/observe/watermarks.py) on a ticker
of its own, at fixed timestamps `start + k·interval` as Prometheus evaluates rules, and logs
each transition even when nobody scrapes; a scrape reports the latest evaluation. Evaluating
on scrapes instead timed `for` with the scrapes' jitter: a 1 s `for` measured as 0.999 s
missed a firing that Prometheus, on its exact schedule, saw.

If Redis cannot be read, the scrape still answers, with `easeoff_redis_up 0` and nothing
else from Redis, rather than failing (a failed scrape hides *why*).

The same ticker records the history (feedback/observe/history.py) every `sample_every` seconds, and
the same HTTP server (feedback/observe/web.py) serves the page built from it at `/`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import msgspec
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from redis import Redis
from rq import Worker

from easeoff import __version__
from easeoff.feedback import clock
from easeoff.feedback.budget.state import BudgetState, read_budgets
from easeoff.feedback.config import Config
from easeoff.feedback.connect import REDIS_UNREACHABLE
from easeoff.feedback.levers import events
from easeoff.feedback.levers.lever import lever_families, settings_for
from easeoff.feedback.levers.limits import current_limits
from easeoff.feedback.levers.rates import RateLimiter
from easeoff.feedback.observe.budget_families import budget_families
from easeoff.feedback.observe.gate_families import shadow_families, signal_families, verdict_families
from easeoff.feedback.observe.history import DEFAULT_PERIOD, HistorySampler
from easeoff.feedback.observe.lever_families import contingency_families, limit_families, rate_families, switch_families
from easeoff.feedback.observe.metric_families import (
    build_info_family,
    counter_families,
    exporter_families,
    job_time_families,
    queue_families,
    queue_held,
    watermark_families,
    worker_families,
)
from easeoff.feedback.observe.queue_stats import QueueStats, queue_stats
from easeoff.feedback.observe.watermark_monitor import Transition, WatermarkMonitor
from easeoff.feedback.observe.watermarks import config_alarms, measures_of
from easeoff.feedback.observe.web import ExporterServer, Site
from easeoff.feedback.queue_names import known_queue_names
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.tally import job_times, shadow_tally, unknown_resources
from easeoff.feedback.tally.counters import Count, counter_key, read_counts
from easeoff.feedback.tally.shadow_tally import ShadowCount
from easeoff.feedback.tally.unknown_resources import UnknownResource
from easeoff.feedback.verdict.cooldown import cooldown_key, parked_key
from easeoff.feedback.verdict.gate import live_config

log = logging.getLogger("easeoff.exporter")


class ScrapeInputs(msgspec.Struct, frozen=True):
    """Everything one scrape reads from Redis, taken at `now`."""

    now: float
    queues: list[QueueStats]
    counts: dict[str, list[Count]]
    snapshot: Snapshot
    limits: dict[str, tuple[int, int]]
    rates: dict[str, tuple[float, int]]  # resource → (starts a second allowed, jobs waiting on the rate)
    cooling: dict[str, bool]
    parked: dict[str, int]
    workers: int
    event_counts: dict[str, int]
    unknown: list[UnknownResource]
    shadow: list[ShadowCount]
    budgets: dict[str, BudgetState]
    job_times: dict[str, list[job_times.Histogram]]  # run_seconds, queue_wait_seconds


def read_inputs(redis_conn: Redis, config: Config, now: float) -> ScrapeInputs:
    """The reads of one scrape. Each helper is the one `status` and the workers use, so the
    exporter cannot drift from them; a new switch is one more read here and one more family."""
    stats = queue_stats(redis_conn, known_queue_names(redis_conn, config.queues), now)
    resources = list(config.resources)
    with redis_conn.pipeline(transaction=False) as pipe:
        for name in resources:
            pipe.exists(cooldown_key(name))
            pipe.zcard(parked_key(name))
        pipe.scard(Worker.redis_workers_keys)
        pipe.hgetall(unknown_resources.KEY)
        for kind in job_times.KINDS:
            pipe.hgetall(counter_key(kind))
        *per_resource, workers, unknown, run, wait = pipe.execute()
    return ScrapeInputs(
        now=now,
        queues=stats,
        counts=read_counts(redis_conn),
        snapshot=ReadingsCache(redis_conn, config).stored(),
        limits=current_limits(redis_conn, config, now),
        rates=rates_of(redis_conn, config),
        cooling={name: bool(per_resource[2 * i]) for i, name in enumerate(resources)},
        parked={name: int(per_resource[2 * i + 1]) for i, name in enumerate(resources)},
        workers=int(workers),
        event_counts=events.counts(redis_conn),
        unknown=unknown_resources.parse(unknown, config.resources),
        shadow=shadow_tally.read(redis_conn, now),
        budgets=read_budgets(redis_conn, config, now),
        job_times={"run_seconds": job_times.parse(run), "queue_wait_seconds": job_times.parse(wait)},
    )


def rates_of(redis_conn: Redis, config: Config) -> dict[str, tuple[float, int]]:
    rated = {name: r.rate for name, r in config.resources.items() if r.rate is not None}
    waiting = RateLimiter(redis_conn).waiting(rated) if rated else {}
    return {name: (rate.count / rate.per, waiting[name]) for name, rate in rated.items()}


def queue_measures(stats: list[QueueStats]) -> dict[str, dict[str, float]]:
    return {s.name: measures_of(s.ready, s.oldest_ready_age_s) for s in stats}


def build_families(config: Config, inputs: ScrapeInputs, monitor: WatermarkMonitor) -> list[Metric]:
    now, snapshot = inputs.now, inputs.snapshot
    shadow = shadow_families(config, snapshot, now, inputs.shadow)  # judged as configured, apart
    config = live_config(config, snapshot, now)  # ops' threshold overrides show as the thresholds
    queue_names = [s.name for s in inputs.queues]
    held = queue_held(config, queue_names, snapshot, now)
    return [
        *queue_families(inputs.queues, held),
        *watermark_families(config, monitor),
        *counter_families(inputs.counts),
        *job_time_families(inputs.job_times["run_seconds"], inputs.job_times["queue_wait_seconds"]),
        *worker_families(inputs.workers),
        *signal_families(config, snapshot, now),
        *verdict_families(config, snapshot, now, inputs.unknown),
        *switch_families(config, snapshot.hosts_out, inputs.cooling, inputs.parked),
        *limit_families(inputs.limits),
        *rate_families(inputs.rates),
        *budget_families(inputs.budgets, now),
        *contingency_families(snapshot.switches, now, inputs.event_counts, config.switch_stale_after),
        *shadow,
    ]


class EaseoffCollector(Collector):
    """Reads Redis on each scrape; reports the water-mark monitor's latest evaluation."""

    def __init__(
        self, redis_conn: Redis, config: Config, monitor: WatermarkMonitor, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis_conn
        self.config = config
        self.lever_settings = settings_for(config)  # a lever's bad table stops the exporter at its start
        self.monitor = monitor
        self.clock = clock
        self._redis_was_up = True

    def describe(self) -> list[Metric]:
        """Nothing up front: registering must not read Redis (the families depend on what is there)."""
        return []

    def collect(self) -> Iterator[Metric]:
        yield build_info_family(__version__)  # whether or not Redis answers
        started = time.perf_counter()
        try:
            inputs = read_inputs(self.redis, self.config, self.clock())
        except REDIS_UNREACHABLE as exc:
            self._redis_state(False, exc)
            yield from exporter_families(False, time.perf_counter() - started)
            return
        self._redis_state(True)
        yield from build_families(self.config, inputs, self.monitor)
        try:
            yield from lever_families(self.redis, self.lever_settings, self.clock())
        except REDIS_UNREACHABLE as exc:
            self._redis_state(False, exc)
        yield from exporter_families(True, time.perf_counter() - started)

    def _redis_state(self, up: bool, exc: BaseException | None = None) -> None:
        """Log when Redis goes away and comes back, not on every scrape in between."""
        if up != self._redis_was_up:
            if up:
                log.warning("Redis at %s is readable again", self.config.redis_url_redacted)
            else:
                log.warning("cannot read Redis at %s: %s", self.config.redis_url_redacted, exc)
        self._redis_was_up = up


class Exporter:
    """The collector in its own registry, an HTTP server for it and the page, and the ticker that
    evaluates the water marks and samples the history."""

    def __init__(
        self, redis_conn: Redis, config: Config, evaluate_every: float = 1.0, sample_every: float = DEFAULT_PERIOD
    ) -> None:
        self.redis = redis_conn
        self.config = config
        self.evaluate_every = evaluate_every
        self.history = HistorySampler(redis_conn, config, sample_every)
        self.monitor = WatermarkMonitor(config_alarms(config))
        self.collector = EaseoffCollector(redis_conn, config, self.monitor)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        self._alarm_queues = list(dict.fromkeys(alarm.queue for alarm in self.monitor.alarms))

    def evaluate(self, now: float | None = None) -> list[Transition]:
        """Evaluate the water marks at `now` (default: the clock), from the queues that have them."""
        if not self._alarm_queues:
            return []
        now = clock.now() if now is None else now
        stats = queue_stats(self.redis, self._alarm_queues, now)
        transitions = self.monitor.observe(queue_measures(stats), now)
        alerts = [t for t in transitions if "firing" in (t.before, t.after)]
        if alerts:  # fired and resolved, as events for the page and annotations (pending is noise)
            with self.redis.pipeline() as pipe:
                for t in alerts:
                    events.record(pipe, "watermark", t.message(), who="easeoff exporter", at=t.at)
                pipe.execute()
        return transitions

    def serve(
        self, host: str, port: int, stop: threading.Event, on_listening: Callable[[str, int], None] | None = None
    ) -> None:
        """Serve /metrics and the page until `stop` is set, evaluating the water marks every
        `evaluate_every` seconds and sampling the history on the first tick each sample is due."""
        server = ExporterServer(host, port, Site(self.registry, self.redis, self.config))
        thread = threading.Thread(target=server.serve_forever, name="easeoff-http", daemon=True)
        thread.start()
        try:
            bound_host, bound_port = server.server_address[:2]
            if on_listening is not None:
                on_listening(str(bound_host), int(bound_port))
            for tick in evaluation_ticks(clock.now(), self.evaluate_every, stop):
                try:
                    self.evaluate(tick)
                except REDIS_UNREACHABLE as exc:
                    log.debug("water marks not evaluated: %s", exc)  # the scrapes report Redis as down
                try:
                    self.history.maybe_sample()
                except REDIS_UNREACHABLE as exc:
                    log.debug("history not sampled: %s", exc)
        finally:
            server.shutdown()
            server.server_close()


def evaluation_ticks(start: float, every: float, stop: threading.Event) -> Iterator[float]:
    """`start`, `start + every`, ... as each comes due, until `stop`; ticks missed while an
    evaluation ran long are skipped, not bunched (as Prometheus skips missed rule evaluations)."""
    tick = start
    while not stop.wait(max(0.0, tick - clock.now())):
        yield tick
        behind = max(0.0, clock.now() - tick)
        tick += every * (1 + int(behind // every))
