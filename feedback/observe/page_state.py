"""What the page shows, read from Redis in one place: the first paint and every live update use it.

`read_state` gathers the history, the events, the live queue counts, what holds work now (the
gate's own reasons, as `easeoff status` gives them), the switches in force with their age,
the newest failed jobs, the shadow verdicts (what the policies on trial would hold, apart
from what holds) and each budget as its controller last saw and set it. `PageState.facts`
is the same as plain JSON at `/api/state`. Every read is bounded, so a poll every few seconds
costs a handful of round trips whatever the depth of the queues or the length of the logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from redis import Redis

from easeoff.feedback import clock
from easeoff.feedback.budget.state import BudgetState, read_budgets
from easeoff.feedback.config import Config
from easeoff.feedback.durations import age_text
from easeoff.feedback.levers import events as event_log
from easeoff.feedback.levers.events import Event
from easeoff.feedback.levers.switches import Switch
from easeoff.feedback.observe.failed_jobs import FailedJobs, read_failed
from easeoff.feedback.observe.history import Sample, read_history
from easeoff.feedback.observe.queue_stats import QueueStats, queue_stats
from easeoff.feedback.observe.report import global_report, held_queues
from easeoff.feedback.queue_names import known_queue_names
from easeoff.feedback.reasons import Kind, Reason, texts
from easeoff.feedback.scopes import ScopeKind
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.tally import shadow_tally, unknown_resources
from easeoff.feedback.tally.shadow_tally import ShadowCount
from easeoff.feedback.tally.unknown_resources import UnknownResource
from easeoff.feedback.verdict.gate import judge, live_config
from easeoff.feedback.verdict.shadow import ShadowJudge

RECENT_EVENTS = 30
MAX_MARKERS = 30  # the newest events in view get markers on the charts
FAILED_SHOWN = 20  # the newest failed jobs listed: enough to see a pattern, cheap to read


class SwitchView(msgspec.Struct, frozen=True):
    """A switch in force as the page lists it: what, who, why, since when."""

    kind: str
    scope: str
    describe: str
    by: str
    why: str
    at: float
    age_s: float
    expires_in_s: float | None

    @classmethod
    def of(cls, switch: Switch, now: float) -> SwitchView:
        expires = None if switch.expires_at is None else max(0.0, switch.expires_at - now)
        return cls(
            switch.label_kind,
            switch.scope,
            switch.describe(),
            switch.by,
            switch.why,
            switch.at,
            switch.age(now),
            expires,
        )

    @property
    def age(self) -> str:
        return age_text(self.age_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "scope": self.scope,
            "describe": self.describe,
            "by": self.by,
            "why": self.why,
            "at": self.at,
            "age_s": round(self.age_s, 3),
            "age": self.age,
            "expires_in_s": None if self.expires_in_s is None else round(self.expires_in_s, 3),
        }


class ShadowVerdict(msgspec.Struct, frozen=True):
    """What the policies on trial (feedback/verdict/shadow.py) — judged on live readings, holding
    nothing — would decide for one resource now, and what they would have deferred."""

    policy: str  # which policies: the signals on trial (shadow mode, or a shadow threshold's)
    scope: str  # what it judged: a resource, a queue, `global`
    verdict: str  # "admit" or "defer": what it would do now
    reasons: tuple[str, ...] = ()
    tally: str = ""  # what it would have done so far: "would have deferred 312 jobs in the last hour"

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "scope": self.scope,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "tally": self.tally,
        }


class PageState(msgspec.Struct, frozen=True):
    """Everything one rendering of the page needs, as plain data (pure rendering, tests without servers)."""

    config: Config  # with ops' live threshold overrides applied: the lines drawn are the ones that hold
    now: float
    hours: float
    samples: Sequence[Sample] = ()
    events: Sequence[Event] = ()  # the newest in the window, oldest first: the charts' markers (one extra, if more)
    recent: Sequence[Event] = ()  # newest first, whatever the window
    queues: Sequence[QueueStats] = ()  # live counts, not the last sample's
    held_queues: Mapping[str, Sequence[str]] = msgspec.field(default_factory=dict)  # queue → reasons (held ones only)
    held_everything: Sequence[str] = ()  # global holds: `pause all`, global traffic
    held_resources: Mapping[str, Sequence[str]] = msgspec.field(default_factory=dict)  # resource → its own reasons
    held_tasks: Mapping[str, Sequence[str]] = msgspec.field(default_factory=dict)  # task → paused / throttled
    critical: Mapping[str, Sequence[str]] = msgspec.field(default_factory=dict)  # resource → critical findings
    switches: Sequence[SwitchView] = ()  # oldest first
    unknown: Sequence[UnknownResource] = ()
    failed: FailedJobs = msgspec.field(default_factory=FailedJobs)
    shadow_verdicts: Sequence[ShadowVerdict] = ()
    budgets: Sequence[BudgetState] = ()  # each budgeted resource: ceilings, baseline, limit, pace, last decision

    def facts(self) -> dict[str, Any]:
        """The state as JSON-able data (no history: that is `/api/history`)."""
        grace = self.config.backoff.unknown_resource_grace
        return {
            "now": self.now,
            "hours": self.hours,
            "queues": {
                q.name: {
                    **{k: v for k, v in q.as_dict().items() if k != "name"},
                    "held": list(self.held_queues.get(q.name, ())),
                }
                for q in self.queues
            },
            "held": {
                "everything": list(self.held_everything),
                "queues": {q: list(r) for q, r in self.held_queues.items()},
                "resources": {r: list(v) for r, v in self.held_resources.items()},
                "tasks": {t: list(v) for t, v in self.held_tasks.items()},
                "critical": {r: list(v) for r, v in self.critical.items()},
                "unknown_resources": [u.reason(self.now, grace) for u in self.unknown],
            },
            "switches": [s.as_dict() for s in self.switches],
            "failed": {
                "total": self.failed.total,
                "by_queue": dict(self.failed.counts),
                "newest": [j.as_dict() for j in self.failed.jobs],
            },
            "shadow_verdicts": [v.as_dict() for v in self.shadow_verdicts],
            "budgets": {b.resource: b.as_dict(self.now) for b in self.budgets},
        }


def read_state(redis: Redis, config: Config, hours: float, now: float | None = None) -> PageState:
    """Read what the page shows over the last `hours`."""
    now = clock.now() if now is None else now
    start = now - hours * 3600
    snapshot = ReadingsCache(redis, config).stored()
    # One read of the newest events serves both the list and the markers; one past MAX_MARKERS
    # says whether older events in view went unmarked, without reading the whole window.
    newest = event_log.recent(redis, max(RECENT_EVENTS, MAX_MARKERS + 1))
    in_view = [e for e in newest[: MAX_MARKERS + 1] if start <= e.at <= now]
    names = known_queue_names(redis, config.queues)
    # The gate's own functions, on the config as loaded: each applies ops' live overrides itself.
    everything: list[str] = list(global_report(config, snapshot, now)["reasons"])  # as `status`'s GLOBAL line
    held_resources, critical = resource_holds(config, snapshot, now, set(everything))
    return PageState(
        config=live_config(config, snapshot, now),  # the thresholds drawn are the ones in force
        now=now,
        hours=hours,
        samples=read_history(redis, start),
        events=in_view[::-1],
        recent=newest[:RECENT_EVENTS],
        queues=queue_stats(redis, names, now),
        held_queues={q: r for q, r in held_queues(config, names, snapshot, now).items() if r},
        held_everything=everything,
        held_resources=held_resources,
        held_tasks=task_holds(snapshot, now),
        critical=critical,
        switches=[SwitchView.of(s, now) for s in sorted(snapshot.switches.live(now), key=lambda s: s.at)],
        unknown=unknown_resources.read(redis, config.resources),
        failed=read_failed(redis, names, FAILED_SHOWN),
        shadow_verdicts=shadow_verdicts(config, snapshot, now, shadow_tally.read(redis, now)),
        budgets=list(read_budgets(redis, config, now).values()),
    )


def shadow_verdicts(
    config: Config, snapshot: Snapshot, now: float, counts: Sequence[ShadowCount]
) -> tuple[ShadowVerdict, ...]:
    """Per resource the policies on trial would hold now or have deferred jobs for: their reasons
    beyond the gate's, and their count over the last hour."""
    judge_shadow = ShadowJudge()
    tallies: dict[str, list[ShadowCount]] = {}
    for count in counts:
        tallies.setdefault(count.resource, []).append(count)
    found = []
    for name in config.resources:
        would = judge_shadow.holds(name, snapshot, config, now)
        counted = tallies.get(name, [])
        if not would and not counted:
            continue
        policies = sorted({shadow_tally.policy(r) for r in would} | {c.signal for c in counted})
        found.append(
            ShadowVerdict(
                policy=", ".join(policies),
                scope=name,
                verdict="defer" if would else "admit",
                reasons=tuple(texts(would)),
                tally="; ".join(c.describe() for c in counted),
            )
        )
    return tuple(found)


def task_holds(snapshot: Snapshot, now: float) -> dict[str, list[str]]:
    """Tasks ops paused or throttled, each with the reason its jobs get (as the gate words it)."""
    held: dict[str, list[str]] = {}
    for s in sorted(snapshot.switches.live(now), key=lambda s: s.at):
        if s.kind not in ("pause", "throttle") or s.target.kind != ScopeKind.TASK:
            continue
        reason = snapshot.switches.paused(s.target, now) if s.kind == "pause" else None
        if s.kind == "throttle":  # what Switches.throttled says of the jobs it draws, without the draw
            reason = Reason(Kind.THROTTLED, s.scope, value=s.ratio, detail=f"{s.by}: {s.why}", waits_for="delay")
        if reason is not None:
            held.setdefault(s.target.name, []).append(str(reason))
    return held


def resource_holds(
    config: Config, snapshot: Snapshot, now: float, everything: set[str]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per resource the gate would defer: its own reasons (the global ones are listed once, apart),
    and its critical findings."""
    held: dict[str, list[str]] = {}
    critical: dict[str, list[str]] = {}
    for name in config.resources:
        verdict = judge([name], snapshot, config, now)
        if verdict.admit:
            continue
        own = [r for r in verdict.texts if r not in everything]
        if own:
            held[name] = own
        if verdict.critical:
            critical[name] = texts(verdict.critical)
    return held, critical
