"""The budget controller stepped once per probe interval for the whole fleet, its state in Redis.

Every worker that probes for the fleet runs its duties, so several may step the same resource
in one interval. Each reads the controller's state and version, observes, steps (a pure
function, feedback/budget/controller.py) and offers the result to budget_step.lua, which writes
it only if no step was written in this interval (on Redis's clock) and the version is the one
read: the first wins, the rest are dropped. The winning level is written to the resource's
limit key and duty key in the same script, so the leases (acquire.lua) and the pace
(release_pace.lua) follow it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec
from redis import Redis

from easeoff.feedback import keys
from easeoff.feedback.budget.controller import news, step
from easeoff.feedback.budget.controller_state import ControllerState, ControllerTuning, Decision
from easeoff.feedback.budget.observation import BudgetObservation
from easeoff.feedback.budget.state import LastStep
from easeoff.feedback.config import Config, ResourceConfig
from easeoff.feedback.lua import LuaScript

BUDGET_STEP = LuaScript.load(
    "easeoff.feedback", "budget_step", argv=("interval_ms", "version", "state", "limit", "duty", "record", "relearn")
)
LEARN_WINDOWS = 3  # idle spell, in budget windows: a window to go quiet, one to learn from, one to spare
FIELDS = ("controller", "version", "step")  # the controller's fields in the budget hash (keys.BUDGET_PREFIX)

log = logging.getLogger(__name__)

Observe = Callable[[], BudgetObservation | None]


def budgeted(config: Config) -> dict[str, ResourceConfig]:
    """The resources whose limit the budget controller sets."""
    return {name: r for name, r in config.resources.items() if r.budget is not None}


def tuning(resource: ResourceConfig, interval: float) -> ControllerTuning:
    """The controller's constants for one resource. Its latency is a quantile over the budget's
    window, so a change shows in full only a window later (settle, cut cool-down); the measuring
    side learns a baseline only after a window and an interval of quiet, then from a few quiet
    windows (feedback/budget/measure.py), so an idle spell lasts LEARN_WINDOWS windows; a
    concurrency table, if any, caps the level."""
    window = resource.budget.reading_lag if resource.budget is not None else ControllerTuning().settle_s
    top = float(resource.concurrency.max) if resource.concurrency is not None else ControllerTuning().max_level
    return ControllerTuning(
        settle_s=window,
        cut_cooldown_s=window,
        learn_s=LEARN_WINDOWS * window + 2 * interval,
        max_level=max(top, 1.0),
    )


def load_state(raw: bytes | str | None) -> ControllerState:
    """The stored state, or a cold one if there is none or it cannot be read (a version change):
    a cold start idles, learns and grows from below one job at a time, which is the safe side."""
    if raw is None:
        return ControllerState()
    try:
        return msgspec.json.decode(raw, type=ControllerState)
    except msgspec.DecodeError:
        log.warning("budget controller state unreadable; starting cold")
        return ControllerState()


def interval_number(redis_time: tuple[int, int], interval_ms: int) -> int:
    seconds, micros = redis_time
    return (seconds * 1000 + micros // 1000) // interval_ms


class Stepped(msgspec.Struct, frozen=True):
    decision: Decision
    news: bool  # its reason or level differs from the last step's: an event, not just a log line


def step_budget(
    redis: Redis, config: Config, resource: str, observe: Observe, cfg: ControllerTuning | None = None
) -> Stepped | None:
    """Step `resource`'s controller if no prober has this interval. The step this call wrote, or
    None when another prober stepped first or nothing could be observed (the level holds)."""
    interval_ms = max(int(config.probe_interval * 1000), 1)
    key = keys.budget_key(resource)
    with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(key, FIELDS)
        pipe.time()
        (raw, version, last), now = pipe.execute()
    if last is not None and int(last) >= interval_number(now, interval_ms):
        return None  # another prober stepped in this interval: do not even observe
    obs = observe()
    if obs is None:
        return None
    if cfg is None:
        cfg = tuning(config.resources[resource], config.probe_interval)
    before = load_state(raw)
    state, decision = step(before, obs, cfg)
    args = BUDGET_STEP.args(
        interval_ms=interval_ms,
        version=(version.decode() if isinstance(version, bytes) else version) or "0",
        state=msgspec.json.encode(state),
        limit=decision.concurrency,
        duty=repr(decision.duty) if decision.duty is not None else "",
        record=LastStep.of(obs, decision).encode(),  # what operators see of it (feedback/budget/state.py)
        relearn="1" if decision.relearn else "",
    )
    written = BUDGET_STEP.register(redis)(keys=[key, keys.limit_key(resource), keys.duty_key(resource)], args=args)
    return Stepped(decision, news(before, decision)) if int(written) else None


def controller_state(redis: Redis, resource: str) -> ControllerState | None:
    """The state in force, for status and the page."""
    raw = redis.hget(keys.budget_key(resource), "controller")
    return load_state(raw) if raw is not None else None
