"""A budget's state as operators see it: one typed reader for the exporter, the page and `status`.

The controller's step (feedback/budget/fleet.py, budget_step.lua) writes `LastStep` — what it
saw (each ceiling's value against its limit, the baseline) and what it decided (the reason, its
text, the level) — into the budget hash's `last` field in the same script that writes its state,
limit and pace; `read_budgets` reads that back with the limit, the pace and the leases in force.
Nothing here parses a formatted string back: the text is for people, the fields for machines.
"""

from __future__ import annotations

import math

import msgspec
from redis import Redis

from easeoff.feedback import clock, keys
from easeoff.feedback.budget.controller_state import Decision, Why
from easeoff.feedback.budget.observation import BudgetObservation, Ceiling
from easeoff.feedback.config import BudgetConfig, Config
from easeoff.feedback.levers.limits import default_limit

LAST_FIELD = "last"  # the budget hash's field holding the JSON LastStep
UNITS = {"latency": "s", "lag": "s", "history_list_length": ""}  # each ceiling's unit ("": a count)


class LastStep(msgspec.Struct, frozen=True):
    """The controller's last written step: what it saw and what it decided, at fleet time `at`."""

    at: float
    why: Why
    text: str  # Decision.text: the reason with the numbers behind it, for people
    level: float
    slack: float | None  # the tightest ceiling's (None: some ceiling unreadable, so it held)
    baseline: float | None  # the idle baseline the measuring side reported (None: not learned yet)
    ceilings: tuple[Ceiling, ...] = ()
    unreadable: tuple[str, ...] = ()

    @classmethod
    def of(cls, obs: BudgetObservation, decision: Decision) -> LastStep:
        return cls(
            at=obs.at,
            why=decision.why,
            text=decision.text,
            level=decision.level,
            slack=decision.slack,
            baseline=obs.baseline,
            ceilings=obs.ceilings,
            unreadable=obs.unreadable,
        )

    def encode(self) -> bytes:
        return msgspec.json.encode(self)


class CeilingView(msgspec.Struct, frozen=True):
    """One budgeted quantity: the most the budget allows (absolute: a `1.5x` latency is resolved
    against the baseline) and the value the controller last saw; None where not known."""

    name: str
    limit: float | None
    value: float | None

    @property
    def unit(self) -> str:
        return UNITS.get(self.name, "")

    @property
    def slack(self) -> float | None:
        if self.limit is None or self.value is None or self.limit <= 0 or not math.isfinite(self.value):
            return None
        return 1.0 - self.value / self.limit


class BudgetState(msgspec.Struct, frozen=True):
    """A budgeted resource now: its ceilings, baseline, the limit and pace in force, the last decision."""

    resource: str
    ceilings: tuple[CeilingView, ...]
    baseline: float | None  # seconds; None until the measuring side reports one
    limit: int  # the fleet-wide concurrency in force (0 while learning: no new job starts)
    in_use: int  # live leases held against it
    duty: float | None  # below one job at a time, the share of time a job may run; None at full pace
    last: LastStep | None  # None: never stepped (or its record is unreadable)

    @property
    def pace(self) -> float:
        """The duty cycle as a number: 1 at full pace."""
        return 1.0 if self.duty is None else self.duty

    @property
    def slack(self) -> float | None:
        return self.last.slack if self.last is not None else None

    def age(self, now: float) -> float | None:
        """Seconds since the last step (None: never)."""
        return None if self.last is None else max(0.0, now - self.last.at)

    def as_dict(self, now: float) -> dict[str, object]:
        last = self.last
        return {
            "ceilings": {
                c.name: {"limit": c.limit, "value": c.value, "slack": c.slack, "unit": c.unit} for c in self.ceilings
            },
            "baseline": self.baseline,
            "slack": self.slack,
            "limit": self.limit,
            "in_use": self.in_use,
            "duty": self.duty,
            "decision": None
            if last is None
            else {"why": str(last.why), "text": last.text, "at": last.at, "age_s": self.age(now)},
        }


def decode_last(raw: bytes | str | None) -> LastStep | None:
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw, type=LastStep)
    except msgspec.DecodeError:  # written by another version: shown as unknown, not guessed at
        return None


def ceilings_of(budget: BudgetConfig, last: LastStep | None) -> tuple[CeilingView, ...]:
    """The budget's ceilings in config order, each with the value the last step saw."""
    seen = {c.name: c.value for c in last.ceilings} if last is not None else {}
    baseline = last.baseline if last is not None else None
    found: list[CeilingView] = []
    if budget.latency is not None:
        found.append(CeilingView("latency", budget.latency, seen.get("latency")))
    elif budget.latency_multiple is not None:
        limit = budget.latency_multiple * baseline if baseline is not None else None
        found.append(CeilingView("latency", limit, seen.get("latency")))
    if budget.lag is not None:
        found.append(CeilingView("lag", budget.lag, seen.get("lag")))
    if budget.history_list_length is not None:
        found.append(CeilingView("history_list_length", budget.history_list_length, seen.get("history_list_length")))
    return tuple(found)


def read_budgets(redis: Redis, config: Config, now: float | None = None) -> dict[str, BudgetState]:
    """Every budgeted resource's state, in one pipelined round trip."""
    budgeted = {name: r for name, r in config.resources.items() if r.budget is not None}
    if not budgeted:
        return {}
    now = clock.now() if now is None else now
    with redis.pipeline(transaction=False) as pipe:
        for name in budgeted:
            pipe.hget(keys.budget_key(name), LAST_FIELD)
            pipe.get(keys.limit_key(name))
            pipe.get(keys.duty_key(name))
            pipe.zcount(keys.leases_key(name), now, "+inf")
        raw = pipe.execute()
    found = {}
    for i, (name, resource) in enumerate(budgeted.items()):
        last_raw, limit, duty, in_use = raw[4 * i : 4 * i + 4]
        last = decode_last(last_raw)
        assert resource.budget is not None
        found[name] = BudgetState(
            resource=name,
            ceilings=ceilings_of(resource.budget, last),
            baseline=last.baseline if last is not None else None,
            limit=int(limit) if limit is not None else default_limit(resource),
            in_use=int(in_use),
            duty=float(duty) if duty is not None else None,
            last=last,
        )
    return found
