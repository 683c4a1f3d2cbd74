"""The controller that spends a resource's budget: one pure step per probe interval.

Its output is a *level*: at 1 or more, the resource's fleet-wide concurrency (its floor); below
1, a duty cycle at one job at a time (the share of time a heavy job may run: after a job of
run time t, the next waits t * (1/level - 1), gh-ost's --nice-ratio found instead of guessed).

The rules (issue 24): grow while the budget has slack and the heavy work's throughput still
rises with the level (Protego: past saturation more work only adds contention); cut at once,
multiplicatively, on a breach; remember the levels that breached (a memory that fades with a
half-life) and approach them slowly; hold, never grow, while the reading is stale; hold inside
a dead band just above the line (Spirit's autoscale). Growth is judged on a *window* of
intervals at one level (throughput is counted in finished jobs, and one interval holds too few
of them), after a settling time for the latency reading to catch up with the change.

With no learned baseline the measuring side cannot judge a relative budget: the controller
then leaves idle windows (level 0: no new job starts) at a cold start and now and then after.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import msgspec

from easeoff.feedback.budget.controller_state import (
    Base,
    ControllerState,
    ControllerTuning,
    Decision,
    Memory,
    Why,
    Window,
    setting,
)
from easeoff.feedback.budget.observation import BudgetObservation

MIN_SPAN = 1.1  # levels closer than 10% are too near to draw a slope between, in noise


def step(state: ControllerState, obs: BudgetObservation, cfg: ControllerTuning) -> tuple[ControllerState, Decision]:
    """One interval: the next state and the decision, from the last state and this observation."""
    new, decision = _step(state, obs, cfg)
    return msgspec.structs.replace(new, last_why=decision.why), decision


def news(before: ControllerState, decision: Decision) -> bool:
    """Whether a decision is worth an event: its reason or its level differs from the last one's."""
    level = before.level if before.last_why != Why.LEARNING else 0.0
    return decision.why != before.last_why or decision.level != level


def _step(state: ControllerState, obs: BudgetObservation, cfg: ControllerTuning) -> tuple[ControllerState, Decision]:
    dt = obs.at - state.last_at if state.last_at is not None and obs.at > state.last_at else 0.0
    st = msgspec.structs.replace(state, last_at=obs.at)
    slack = obs.slack
    idle = _idle_spell(st, obs, cfg)
    if idle is not None:
        return idle
    st = _ready(st, obs, cfg)
    level = st.level
    breached = st.breached.level if st.breached is not None else None

    if slack is None:
        return st, Decision(
            Why.HOLD_STALE,
            level,
            None,
            breached_level=breached,
            detail="; ".join(obs.unreadable) or "no usable reading",
        )
    if slack < 0:
        return _cut(st, level, slack, obs.at, dt, cfg)

    st = _measure(st, obs, slack, dt, cfg)
    if slack < cfg.dead_band:
        return st, Decision(Why.HOLD_DEAD_BAND, level, slack, breached_level=breached)
    if not st.window.complete(cfg, level):
        return st, Decision(Why.HOLD_MEASURING, level, slack, breached_level=breached)
    return _judge_window(st, obs, slack, cfg)


def _idle_spell(
    st: ControllerState, obs: BudgetObservation, cfg: ControllerTuning
) -> tuple[ControllerState, Decision] | None:
    """An idle spell to learn the baseline in (a cold start's, or a relearn's), else None."""
    if obs.needs_baseline and st.cannot_meet_since is not None and obs.at - st.cannot_meet_since >= cfg.relearn_after_s:
        # No heavy work fitted the budget for a while: the live site itself may have moved (the
        # day's traffic) since the baseline was learned, and a budget relative to a stale one can
        # never be met again. Idle, and learn it afresh; every memory of levels goes with it.
        spell = ControllerState(idle_until=obs.at + cfg.learn_s, last_at=obs.at)
        left = f"idle {cfg.learn_s:.1f}s: breached at the floor for {obs.at - st.cannot_meet_since:.0f}s"
        return spell, Decision(Why.RELEARN, 0.0, obs.slack, detail=left, relearn=True)
    learning = _learning(st, obs, cfg)
    if learning is not None:
        left = f"idle {learning.idle_until - obs.at:.1f}s more for a baseline"
        return learning, Decision(Why.LEARNING, 0.0, obs.slack, detail=left)
    return None


def _ready(st: ControllerState, obs: BudgetObservation, cfg: ControllerTuning) -> ControllerState:
    """The state to step from: past any idle spell, its level within the bounds (a tuning change
    may have moved them), its memories faded to now."""
    if st.idle_until < 0:  # a baseline before any idle spell: none needed
        st = msgspec.structs.replace(st, idle_until=obs.at)
    if st.level <= 0:  # the first step after learning
        st = _moved(st, cfg.start_level, obs.at)
    level = min(max(st.level, cfg.floor), cfg.max_level)
    return msgspec.structs.replace(
        st, level=level, breached=_fade(st.breached, obs.at, cfg), plateau=_fade(st.plateau, obs.at, cfg)
    )


def _judge_window(
    st: ControllerState, obs: BudgetObservation, slack: float, cfg: ControllerTuning
) -> tuple[ControllerState, Decision]:
    """A whole window inside the budget at this level: back off a step that bought nothing, hold,
    or grow (in small steps toward a level that breached, never past the line drawn ahead)."""
    level, window, rate, base = st.level, st.window, st.window.rate, st.base
    if st.breached is not None and st.breached.depth <= cfg.shallow_breach and window.slack >= cfg.wide_slack:
        # A whole window far inside the budget is evidence against the memory of a shallow breach
        # (within the reading's noise): it weighs half as much, so one noisy breach at a cold
        # start does not hold growth for a half-life while the reading shows room. A deep breach
        # is believed: latency is convex, and room two steps below says little about the level.
        st = msgspec.structs.replace(st, breached=_halved(st.breached, cfg))
    breached = st.breached.level if st.breached is not None else None
    # A whole window inside the budget: whatever could not be met at the floor now is.
    judged = msgspec.structs.replace(st, window=Window(since=obs.at), cannot_meet_since=None)
    base_rate = base.rate if base is not None else None

    def hold(why: Why, detail: str = "") -> tuple[ControllerState, Decision]:
        return judged, Decision(why, level, slack, rate, base_rate, breached, detail)

    stepped = _ran_more(window, base, level)
    if base is not None and setting(level) >= 2 and stepped > 0:
        wanted = cfg.gain_share * stepped
        if rate < base.rate * (1 + wanted):
            back = _moved(judged, base.level, obs.at)
            back = msgspec.structs.replace(back, base=None, plateau=Memory(level, obs.at))
            detail = f"needed +{wanted:.0%}"
            return back, Decision(Why.BACK_NO_GAIN, base.level, slack, rate, base.rate, breached, detail)
    if not _busy(window, level):
        return hold(Why.HOLD_IDLE, f"mean running {window.running:.2g}")
    if level >= cfg.max_level:
        return hold(Why.HOLD_AT_MAX)
    return _grow(judged, window, obs, hold, cfg)


def _grow(
    judged: ControllerState,
    window: Window,
    obs: BudgetObservation,
    hold: Callable[[Why, str], tuple[ControllerState, Decision]],
    cfg: ControllerTuning,
) -> tuple[ControllerState, Decision]:
    """One step up from a judged window, or a hold when the step would reach what was learned
    (a level that breached or bought nothing, the line drawn through the last two windows)."""
    level, base, breached = judged.level, judged.base, judged.breached
    target = _grown(level, window.slack, cfg)
    if breached is not None and setting(target) >= setting(breached.level):
        target = _grown(level, 0.0, cfg)  # near a level that breached: one step at a time
    if judged.plateau is not None and setting(target) >= setting(judged.plateau.level):
        return hold(Why.HOLD_NO_GAIN, f"no gain at {judged.plateau.level:.3g}")
    room = _room(window, base, level, cfg)
    if room is not None and setting(target) > room:
        target = room if room < 1 else float(math.floor(room))
        if setting(target) <= setting(level):
            return hold(Why.HOLD_PREDICTED, f"slack {cfg.dead_band:g} predicted at {room:.3g}")
    why = Why.GROW
    if breached is not None and target >= breached.level:
        weight = breached.weight(obs.at, cfg)
        if weight > cfg.approach_after and setting(target) >= setting(breached.level):
            return hold(Why.HOLD_BREACHED, f"memory {weight:.2f}")
        full = target - level if level < 1 else 1.0  # a whole job, not what is left of one
        target = min(target, level + full * cfg.approach_fraction * (1 - weight))
        why = Why.APPROACH_BREACHED
    target = min(target, cfg.max_level)
    grown = _moved(judged, target, obs.at)
    if base is None or setting(target) >= setting(level) * MIN_SPAN:  # judge the new setting against this one
        grown = msgspec.structs.replace(grown, base=Base(level, window.rate, window.slack, window.running))
    base_rate = base.rate if base is not None else None
    breached_level = breached.level if breached is not None else None
    return grown, Decision(why, target, obs.slack, window.rate, base_rate, breached_level)


def _room(window: Window, base: Base | None, level: float, cfg: ControllerTuning) -> float | None:
    """The setting at which slack would fall to the dead band, drawn through this window's slack and
    the last level's (latency is convex in load: the line comes no later than this, so a step
    capped here may still breach, and is then cut). None without two levels to draw it through."""
    if base is None or setting(level) < setting(base.level) * MIN_SPAN:
        return None
    slope = (window.slack - base.slack) / (setting(level) - setting(base.level))
    if slope >= 0:
        return None
    return setting(level) + (window.slack - cfg.dead_band) / -slope


def _learning(st: ControllerState, obs: BudgetObservation, cfg: ControllerTuning) -> ControllerState | None:
    """The next state while an idle spell is due, else None. A cold start idles `learn_s` (less
    if a baseline arrives sooner); without a baseline, again `relearn_every_s` after the last."""
    if obs.baseline is not None or not obs.needs_baseline:
        return None
    if st.idle_until < 0 or obs.at - st.idle_until >= cfg.relearn_every_s:
        until = obs.at + cfg.learn_s
    elif obs.at < st.idle_until:
        until = st.idle_until
    else:
        return None
    return msgspec.structs.replace(st, idle_until=until, window=Window(), base=None)


def _cut(
    st: ControllerState, level: float, slack: float, now: float, dt: float, cfg: ControllerTuning
) -> tuple[ControllerState, Decision]:
    """Cut at once. A breach after a quiet spell cuts by its depth (Gradient2's proportional
    decrease, between a tenth and a half) and is remembered; one that goes on within the
    cool-down (the reading still shows the level before the cut) cuts gently, per second."""
    fresh = st.last_cut_at is None or now - st.last_cut_at >= cfg.cut_cooldown_s
    breached = st.breached
    shown = _shown(st, now, cfg)  # a reading that lags a cut shows the level before it
    if fresh:
        factor = min(cfg.least_cut, max(cfg.cut_ratio, 1 + cfg.cut_gain * slack))
        remembered = min(shown, breached.level) if breached is not None else shown
        if remembered > cfg.floor:  # the floor is no ceiling to approach: remember what breached above it
            breached = Memory(remembered, now, depth=-slack)
        detail = "hard"
    else:
        # ... by its depth too: a reading hovering just over the line (a quantile's noise) trims,
        # where a deep one still takes recut_per_s a second.
        per_second = min(max(cfg.recut_per_s, 1 + cfg.cut_gain * slack), 0.98)
        factor = min(per_second ** max(dt, 0.05), 0.98)
        detail = "within the cool-down"
    new = max(cfg.floor, level * factor)
    high = st.recent_high if shown > level else Memory(level, now)  # left now: readings show it a while
    cut = _moved(st, new, now)
    cut = msgspec.structs.replace(
        cut, base=None, breached=breached, last_cut_at=now if fresh else st.last_cut_at, recent_high=high
    )
    why = Why.CUT_BREACH
    if level <= cfg.floor:  # nothing left to cut: say so (an event), and keep the trickle going
        why, detail = Why.CANNOT_MEET, f"breached at the floor, a duty cycle of {cfg.floor:g}"
        cut = msgspec.structs.replace(cut, cannot_meet_since=st.cannot_meet_since or now)
    return cut, Decision(why, new, slack, breached_level=breached.level if breached else None, detail=detail)


def _measure(
    st: ControllerState, obs: BudgetObservation, slack: float, dt: float, cfg: ControllerTuning
) -> ControllerState:
    """Count this interval into the window, once the level has settled."""
    window = st.window
    since = obs.at if window.since is None else window.since
    if window.since is None:
        window = Window(since=since)
    if obs.at - since < cfg.settle_s:
        return msgspec.structs.replace(st, window=window)
    window = Window(
        since=since,
        time=window.time + dt,
        work=window.work + max(obs.work_done, 0.0),
        slack_sum=window.slack_sum + slack,
        running_sum=window.running_sum + max(obs.running, 0),
        intervals=window.intervals + 1,
    )
    return msgspec.structs.replace(st, window=window)


def _busy(window: Window, level: float) -> bool:
    """Whether the level is used: below one job, some work ran; above, the slots were mostly full
    (three quarters: a freed slot is handed to a parked job, which a worker then claims, so even
    a deep backlog leaves slots empty for moments)."""
    if level < 1:
        return window.work > 0 or window.running_sum > 0
    return window.running >= min(setting(level) - 0.5, 0.75 * setting(level))


def _ran_more(window: Window, base: Base | None, level: float) -> float:
    """How much more work ran at this level than at the base's, relatively (0: none, or nothing
    to compare): what a step up is judged on. The levels alone overstate a step the workers could
    not fill (a limit of 12 with 8 workers runs 8)."""
    if base is None or setting(level) <= setting(base.level):
        return 0.0
    now = min(window.running, setting(level)) if window.running > 0 else setting(level)
    before = min(base.running, setting(base.level)) if base.running > 0 else setting(base.level)
    return max(now / before - 1, 0.0) if before > 0 else 0.0


def _grown(level: float, slack: float, cfg: ControllerTuning) -> float:
    """One full step up: the duty cycle times `grow_ratio` (to 1 at most), else one more job. Far
    from the line (slack at least `wide_slack`) the step is wider — the duty cycle times
    grow_ratio squared, or as many more jobs as the slack's share of those running, at most
    twice as many — so a budget with room is not spent one window per job: a cold start reaches
    a lock-bound shape's limit of 3 or more in a few windows, not a minute. A step that
    overshoots breaches and is cut and remembered, as any other."""
    wide = slack >= cfg.wide_slack
    if level < 1:
        return min(1.0, level * cfg.grow_ratio ** (2 if wide else 1))
    jobs = math.floor(level)
    return float(jobs + (min(jobs, math.ceil(jobs * slack)) if wide else 1))


def _moved(st: ControllerState, level: float, now: float) -> ControllerState:
    return msgspec.structs.replace(st, level=level, window=Window(since=now))


def _shown(st: ControllerState, now: float, cfg: ControllerTuning) -> float:
    """The level a reading taken now may still show: the current one, or a higher one left less
    than a settling time ago (a quantile over a window lags the change). A breach is remembered
    at it: remembered at the level it was cut to, a lagging reading pins the level to the floor."""
    high = st.recent_high
    if high is not None and now - high.at < cfg.settle_s and high.level > st.level:
        return high.level
    return st.level


def _halved(memory: Memory, cfg: ControllerTuning) -> Memory:
    return Memory(memory.level, memory.at - cfg.memory_half_life_s, memory.depth)


def _fade(memory: Memory | None, now: float, cfg: ControllerTuning) -> Memory | None:
    return memory if memory is not None and memory.weight(now, cfg) >= cfg.memory_forget else None
