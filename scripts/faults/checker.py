"""The nemesis run's checker: a pure function from a whole history to its violations (Jepsen's method).

The history is what the run leaves behind, read once at the end: every execution's start and end
in the MariaDB ledger (one clock, MariaDB's), the resumable jobs' chunk rows, where rq holds each
job at the end, why each failed job failed, the limits and rates the run configured, and when each
strain or pause was published and lifted. Nothing here talks to a server, so each metric is unit
tested on synthetic histories (tests/test_nemesis_checker.py).

Metrics, each a count of jobs or starts except `limit_excess_s`:
- lost: enqueued, and neither finished with its ledger end, nor failed with a reason, nor still
  pending somewhere a worker will find it (queued, scheduled, deferred, started).
- duplicate_runs: a job neither idempotent nor resumable started twice; any job whose executions
  overlap in time (the next starting before the last one's end, or, with no end recorded, its
  start); a resumable job that applied a chunk twice.
- double_placed: a job in two of rq's queues and registries at the end.
- limit_excess_s: seconds during which more executions held a scope than its concurrency limit.
- rate_excess: starts beyond a scope's rate in a window `per - rate_slack` long (the slack absorbs
  the wait between a claim, which the rate counts, and the ledger's start).
- ungated_starts: starts on a scope more than two probe intervals after its strain or pause was
  published and before it was lifted.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

PENDING_PLACES = frozenset({"queued", "scheduled", "deferred", "started"})
METRICS = ("lost", "duplicate_runs", "double_placed", "limit_excess_s", "rate_excess", "ungated_starts")


@dataclass(frozen=True)
class Job:
    """What the run enqueued: its task, its nature and every scope it takes (resources, `task:NAME`)."""

    id: str
    task: str
    idempotent: bool = False
    resumable: bool = False
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Event:
    """One ledger row: an execution (`pid`, rq's `execution` id if known) of a job started or ended."""

    job_id: str
    kind: str  # "start" | "end"
    at: float
    pid: int
    execution: str = ""


@dataclass(frozen=True)
class Window:
    """A scope strained or paused: published (seen by the gate) at `published`, lifted at `lifted`."""

    scope: str
    kind: str
    published: float
    lifted: float


@dataclass(frozen=True)
class Span:
    job_id: str
    pid: int
    start: float
    end: float | None
    execution: str = ""

    @property
    def last_seen(self) -> float:
        """The last moment the ledger shows it running: its end, or (killed, no end) its start."""
        return self.start if self.end is None else self.end

    def describe(self) -> str:
        end = "no end" if self.end is None else f"end {self.end:.3f}"
        return f"pid {self.pid} start {self.start:.3f} {end}" + (f" exec {self.execution}" if self.execution else "")


@dataclass(frozen=True)
class History:
    jobs: Mapping[str, Job]
    events: Sequence[Event]
    places: Mapping[str, frozenset[str]]  # job id → where rq holds it at the end
    failure_reasons: Mapping[str, str] = field(default_factory=dict)  # failed job → why ('' if unsaid)
    chunk_rows: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (job, chunk tag) → rows
    limits: Mapping[str, int] = field(default_factory=dict)  # scope → concurrency limit
    rates: Mapping[str, tuple[int, float]] = field(default_factory=dict)  # scope → (starts, per seconds)
    windows: Sequence[Window] = ()
    probe_interval: float = 1.0
    rate_slack: float = 0.5


@dataclass(frozen=True)
class Violation:
    metric: str
    job_id: str
    evidence: str


@dataclass
class Report:
    counts: dict[str, float]
    violations: list[Violation]
    pending: list[str]

    @property
    def total(self) -> float:
        return sum(self.counts.values())

    def lines(self) -> list[str]:
        """One `nemesis_METRIC N` line each, `nemesis_violations N` (their sum) last."""
        out = [f"nemesis_{m} {_number(self.counts[m])}" for m in METRICS]
        return [*out, f"nemesis_violations {_number(self.total)}"]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def spans(events: Iterable[Event]) -> dict[str, list[Span]]:
    """Each job's executions, in start order: an end closes the latest open start of its (job, pid)."""
    by_job: dict[str, list[Span]] = defaultdict(list)
    open_: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for ev in sorted(events, key=lambda e: (e.at, e.kind != "start")):
        if ev.kind == "start":
            open_[(ev.job_id, ev.pid)].append(ev)
        elif ev.kind == "end":
            starts = open_.get((ev.job_id, ev.pid))
            if starts:
                st = starts.pop()
                by_job[ev.job_id].append(Span(ev.job_id, ev.pid, st.at, ev.at, ev.execution or st.execution))
            else:  # an end without its start (its start lost?): a span of no length
                by_job[ev.job_id].append(Span(ev.job_id, ev.pid, ev.at, ev.at, ev.execution))
    for starts in open_.values():
        for st in starts:
            by_job[st.job_id].append(Span(st.job_id, st.pid, st.at, None, st.execution))
    return {job: sorted(found, key=lambda s: s.start) for job, found in by_job.items()}


def check(history: History) -> Report:
    runs = spans(history.events)
    violations: list[Violation] = []
    violations += lost(history, runs)
    violations += duplicate_runs(history, runs)
    violations += double_placed(history)
    excess_s, periods = limit_excess(history, runs)
    violations += periods
    violations += rate_excess(history, runs)
    violations += ungated_starts(history, runs)
    counts: dict[str, float] = {m: float(sum(1 for v in violations if v.metric == m)) for m in METRICS}
    counts["limit_excess_s"] = excess_s
    pending = sorted(j for j in history.jobs if _pending(history.places.get(j, frozenset())))
    return Report(counts, violations, pending)


def _pending(places: frozenset[str]) -> bool:
    return bool(places) and places <= PENDING_PLACES


def lost(history: History, runs: Mapping[str, list[Span]]) -> list[Violation]:
    found = []
    for job_id in history.jobs:
        places = history.places.get(job_id, frozenset())
        ended = [s for s in runs.get(job_id, []) if s.end is not None]
        reason = history.failure_reasons.get(job_id, "")
        if "finished" in places and ended:
            continue
        if "failed" in places and reason:
            continue
        if _pending(places):
            continue
        if "finished" in places:
            why = f"finished without its ledger end ({len(runs.get(job_id, []))} starts)"
        elif "failed" in places:
            why = "failed without a reason"
        elif places:
            why = f"only in {sorted(places)}"
        else:
            why = "in none of rq's queues or registries"
        found.append(Violation("lost", job_id, f"{why}; places {sorted(places)}"))
    return found


def duplicate_runs(history: History, runs: Mapping[str, list[Span]]) -> list[Violation]:
    chunks: dict[str, list[str]] = defaultdict(list)
    for (job_id, tag), n in history.chunk_rows.items():
        if n > 1:
            chunks[job_id].append(f"{tag} x{n}")
    found = []
    for job_id, job in history.jobs.items():
        mine = runs.get(job_id, [])
        why = []
        if not job.idempotent and not job.resumable and len(mine) > 1:
            why.append(f"not idempotent, started {len(mine)} times")
        for earlier, later in _overlaps(mine):
            why.append(f"ran twice at once: [{earlier.describe()}] and [{later.describe()}]")
        if chunks.get(job_id):
            why.append(f"chunks applied twice: {', '.join(sorted(chunks[job_id]))}")
        if why:
            runs_text = "; ".join(s.describe() for s in mine)
            found.append(Violation("duplicate_runs", job_id, f"{job.task}: {'; '.join(why)} (runs: {runs_text})"))
    return found


def _overlaps(mine: Sequence[Span]) -> list[tuple[Span, Span]]:
    pairs = []
    for i, later in enumerate(mine):
        for earlier in mine[:i]:
            if later.start < earlier.last_seen:
                pairs.append((earlier, later))
    return pairs


def double_placed(history: History) -> list[Violation]:
    return [
        Violation("double_placed", job_id, f"in {sorted(places)}")
        for job_id, places in history.places.items()
        if job_id in history.jobs and len(places) > 1
    ]


def limit_excess(history: History, runs: Mapping[str, list[Span]]) -> tuple[float, list[Violation]]:
    """Seconds above each scope's limit (rounded up to the millisecond, so no excess reads 0), and
    one violation per period above it, naming the jobs running then."""
    total = 0.0
    found = []
    for scope, limit in sorted(history.limits.items()):
        # A span with no length (killed before its end: only its start is known) holds nothing.
        held = [s for s in _scope_spans(history, runs, scope) if s.last_seen > s.start]
        marks = sorted([(s.start, 1, s) for s in held] + [(s.last_seen, -1, s) for s in held], key=_mark_order)
        running: set[Span] = set()
        since: float | None = None
        peak: set[Span] = set()
        for at, step, span in marks:
            if step > 0:
                running.add(span)
            else:
                running.discard(span)
            if len(running) > limit and since is None:
                since, peak = at, set(running)
            elif len(running) > limit and len(running) > len(peak):
                peak = set(running)
            elif len(running) <= limit and since is not None:
                seconds = math.ceil((at - since) * 1000) / 1000
                total += seconds
                jobs = ", ".join(f"{s.job_id} ({s.describe()})" for s in sorted(peak, key=lambda s: s.start))
                found.append(
                    Violation(
                        "limit_excess_s",
                        sorted(peak, key=lambda s: s.start)[-1].job_id,
                        f"{scope}: {len(peak)} running at once, limit {limit}, for {seconds:.3f}s "
                        f"from {since:.3f}: {jobs}",
                    )
                )
                since = None
    return total, found


def _scope_spans(history: History, runs: Mapping[str, list[Span]], scope: str) -> list[Span]:
    return [s for job in history.jobs.values() if scope in job.scopes for s in runs.get(job.id, [])]


def _mark_order(mark: tuple[float, int, Span]) -> tuple[float, int]:
    return (mark[0], mark[1])  # at one instant, an end (-1) before a start: touching is not overlapping


def rate_excess(history: History, runs: Mapping[str, list[Span]]) -> list[Violation]:
    found = []
    for scope, (count, per) in sorted(history.rates.items()):
        window = max(per - history.rate_slack, 0.0)
        starts = sorted((s.start, s.job_id) for s in _scope_spans(history, runs, scope))
        first = 0
        for j, (at, job_id) in enumerate(starts):
            while at - starts[first][0] >= window:
                first += 1
            inside = j - first + 1
            if inside > count:
                ids = [s[1] for s in starts[first : j + 1]]
                found.append(
                    Violation(
                        "rate_excess",
                        job_id,
                        f"{scope}: start at {at:.3f} is number {inside} within {window:g}s "
                        f"(rate {count}/{per:g}s; from {starts[first][0]:.3f}: {ids})",
                    )
                )
    return found


def ungated_starts(history: History, runs: Mapping[str, list[Span]]) -> list[Violation]:
    grace = 2 * history.probe_interval
    seen: Counter[tuple[str, float]] = Counter()
    found = []
    for w in sorted(history.windows, key=lambda w: w.published):
        for job in history.jobs.values():
            if w.scope not in job.scopes:
                continue
            for s in runs.get(job.id, []):
                if w.published + grace < s.start < w.lifted and not seen[(job.id, s.start)]:
                    seen[(job.id, s.start)] += 1
                    found.append(
                        Violation(
                            "ungated_starts",
                            job.id,
                            f"{job.task} started at {s.start:.3f} ({s.start - w.published:.2f}s after {w.kind} of "
                            f"{w.scope} was published at {w.published:.3f}, lifted at {w.lifted:.3f}; pid {s.pid})",
                        )
                    )
    return found
