"""The budget controller as a pure function: its rules as properties, and its convergence on a
simulated database (tests/budget_plant.py) before and after the live load doubles."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easeoff.feedback.budget.controller import step
from easeoff.feedback.budget.controller_state import ControllerState, ControllerTuning, Decision, Why, setting
from easeoff.feedback.budget.observation import BudgetObservation, Ceiling
from tests.budget_plant import Plant, Simulation

pytestmark = pytest.mark.unit

CFG = ControllerTuning()


def obs(
    at: float, value: float | None, *, stale: bool = False, work: float = 1.0, running: int = 1
) -> BudgetObservation:
    return BudgetObservation(
        resource="shard:1",
        at=at,
        ceilings=(Ceiling("latency", value, 1.0),),
        baseline=0.5,
        running=running,
        work_done=work,
        stale=stale,
    )


readings = st.one_of(st.none(), st.floats(min_value=0.0, max_value=3.0))
intervals = st.tuples(readings, st.booleans(), st.floats(min_value=0, max_value=10), st.integers(0, 40))


@settings(max_examples=200, deadline=None)
@given(
    level=st.floats(min_value=0.0, max_value=40.0),
    steps=st.lists(intervals, min_size=1, max_size=60),
    dt=st.floats(min_value=0.05, max_value=5.0),
    baseline=st.booleans(),
)
def test_rules_hold_on_any_sequence(
    level: float, steps: list[tuple[float | None, bool, float, int]], dt: float, baseline: bool
) -> None:
    """Bounds always hold; a stale or unreadable interval never grows the level; a breach always cuts."""
    state = ControllerState(level=level, idle_until=0.0 if baseline or level > 0 else -1.0)
    at = 100.0
    for value, stale, work, running in steps:
        at += dt
        before = min(max(state.level, CFG.floor), CFG.max_level) if state.level > 0 else CFG.start_level
        o = obs(at, value, stale=stale, work=work, running=running)
        if not baseline:
            o = BudgetObservation(o.resource, o.at, o.ceilings, None, o.running, o.work_done, o.stale)
        state, decision = step(state, o, CFG)
        if decision.why in (Why.LEARNING, Why.RELEARN):
            assert decision.level == 0 and decision.concurrency == 0
            continue
        assert CFG.floor <= decision.level <= CFG.max_level
        assert decision.level == state.level
        assert decision.concurrency >= 1
        if stale or value is None:
            assert decision.why == Why.HOLD_STALE and decision.level <= before
        elif value > 1.0:
            assert decision.why == (Why.CANNOT_MEET if before <= CFG.floor else Why.CUT_BREACH)
            assert decision.level < before or decision.level == CFG.floor


def test_a_breach_at_the_floor_says_the_budget_cannot_be_met_once() -> None:
    """At the lowest duty cycle a breach has nothing left to cut: the decision says so (an event, once),
    and the trickle of work goes on at the floor rather than stopping for good."""
    from easeoff.feedback.budget.controller import news

    state = ControllerState(level=CFG.floor * 1.5, idle_until=0.0)
    whys = []
    for i in range(8):
        before = state
        state, decision = step(state, obs(100.0 + i, 2.0), CFG)
        whys.append((decision.why, news(before, decision)))
        assert decision.level == max(CFG.floor, decision.level)
    assert whys[0] == (Why.CUT_BREACH, True)
    cannot = [n for why, n in whys if why == Why.CANNOT_MEET]
    assert cannot and cannot[0] and not any(cannot[1:])  # news once, then quiet while it lasts
    assert state.level == CFG.floor


@pytest.mark.parametrize(("value", "kept"), [(1.02, 0.85), (1.3, 0.75)])
def test_a_breach_that_goes_on_cuts_by_its_depth(value: float, kept: float) -> None:
    """Two seconds breached within the cool-down after a hard cut: a reading hovering 2% over the
    line (a quantile's noise) trims the level; one 30% over takes over a quarter of it (gently: the
    reading still shows the level before the cut, so it is no evidence the cut fell short)."""
    state = ControllerState(level=4.0, idle_until=0.0, last_at=0.0)
    state, decision = step(state, obs(0.25, value, running=4), CFG)
    assert decision.detail == "hard"
    after_hard, at = decision.level, 0.25
    for _ in range(8):
        at += 0.25
        state, decision = step(state, obs(at, value, running=4), CFG)
        assert decision.why == Why.CUT_BREACH
    share = decision.level / after_hard
    assert (share >= kept) if value < 1.1 else (share <= kept), share


def test_a_minute_breached_at_the_floor_idles_to_learn_the_baseline_afresh() -> None:
    """The live site moved (the day's traffic) and the budget, relative to a baseline learned
    before, cannot be met at any level: after a minute of it the controller idles, asks the
    measuring side to forget its baseline, and starts over from what it learns."""
    state, at = ControllerState(level=CFG.floor, idle_until=0.0), 1000.0
    whys = []
    for _ in range(4 * 70):
        at += 0.25
        state, decision = step(state, obs(at, 1.3), CFG)
        whys.append(decision.why)
        if decision.why == Why.RELEARN:
            break
    assert decision.why == Why.RELEARN and decision.relearn and decision.level == 0
    assert Why.CANNOT_MEET in whys and len(whys) >= 4 * 60  # not before a minute of it
    assert state.breached is None and state.level == 0
    # The measuring side has forgotten: no baseline until it has learned one again, idle meanwhile.
    for _ in range(8):
        at += 0.25
        unlearned = msgspec.structs.replace(obs(at, None), baseline=None)
        state, decision = step(state, unlearned, CFG)
        assert decision.why == Why.LEARNING and decision.concurrency == 0
    at += 0.25
    state, decision = step(state, obs(at, 0.5), CFG)  # a baseline again: work resumes from the start
    assert decision.level == CFG.start_level and not decision.relearn


def test_a_breach_at_the_floor_that_clears_does_not_relearn() -> None:
    state, at = ControllerState(level=CFG.floor, idle_until=0.0), 1000.0
    state, decision = step(state, obs(at, 1.3), CFG)
    assert decision.why == Why.CANNOT_MEET and state.cannot_meet_since == at
    for _ in range(4 * 90):
        at += 0.25
        state, decision = step(state, obs(at, 0.2, work=1.0), CFG)
        assert decision.why != Why.RELEARN
    assert state.cannot_meet_since is None and state.level > CFG.floor


def test_cold_start_leaves_idle_windows_until_a_baseline_and_again_later() -> None:
    cfg = ControllerTuning(learn_s=0.75, relearn_every_s=2.5)
    state, at = ControllerState(), 0.0
    seen = []
    for _ in range(16):
        at += 0.25
        state, decision = step(state, _unlearned(at), cfg)
        seen.append(decision.why)
    assert seen[:3] == [Why.LEARNING] * 3
    assert Why.LEARNING not in seen[3:13]
    assert seen[13:16] == [Why.LEARNING] * 3  # still no baseline after 10 intervals: idle again
    # With a baseline, a cold start does not idle at all.
    _, decision = step(ControllerState(), obs(1.0, 0.5), cfg)
    assert decision.why != Why.LEARNING and decision.level == cfg.start_level


def _unlearned(at: float) -> BudgetObservation:
    return BudgetObservation("shard:1", at, (Ceiling("latency", 0.5, 1.0),), None, 1, 1.0)


def test_dead_band_holds_and_slack_grows_after_a_window() -> None:
    state, at = ControllerState(level=2.0, idle_until=0.0), 0.0
    whys = []
    for _ in range(40):
        at += 0.25
        state, decision = step(state, obs(at, 0.97, work=2.0, running=2), CFG)  # slack 0.03 < 0.05
        whys.append(decision.why)
    assert set(whys) == {Why.HOLD_DEAD_BAND} and state.level == 2.0
    for _ in range(40):
        at += 0.25
        state, decision = step(state, obs(at, 0.5, work=2.0, running=2), CFG)
        if decision.why == Why.GROW:
            break
    assert decision.why == Why.GROW and decision.level == 3.0


@pytest.mark.parametrize(("value", "grown"), [(0.2, 4.0), (0.7, 3.0)])
def test_far_from_the_line_a_step_is_wider(value: float, grown: float) -> None:
    """Slack 0.8 at two jobs: the next level is four (the slack's share of those running, at most
    twice as many); slack 0.3 adds one job, as a narrow step does."""
    state, at = ControllerState(level=2.0, idle_until=0.0), 0.0
    for _ in range(200):
        at += 0.25
        state, decision = step(state, obs(at, value, work=0.5, running=2), CFG)
        if decision.why == Why.GROW:
            break
    assert decision.why == Why.GROW and decision.level == grown


def test_no_gain_steps_back_and_holds_there() -> None:
    """Protego: from 2 to 3 jobs at once bought no throughput: back to 2, and stay."""
    state, at = ControllerState(level=2.0, idle_until=0.0), 0.0
    decisions: list[Decision] = []
    for _ in range(200):
        at += 0.25
        running = setting(state.level)
        state, decision = step(state, obs(at, 0.3, work=0.5, running=int(running)), CFG)  # 2 jobs/s flat
        decisions.append(decision)
    whys = [d.why for d in decisions]
    assert Why.GROW in whys and Why.BACK_NO_GAIN in whys
    assert whys.index(Why.BACK_NO_GAIN) > whys.index(Why.GROW)
    assert state.level == 2.0 and decisions[-1].why in (Why.HOLD_NO_GAIN, Why.HOLD_MEASURING)


def test_a_step_is_judged_by_what_ran_not_by_the_levels() -> None:
    """Eight workers: a limit of 7 runs about 6 (a freed slot waits for a worker to claim its job)
    and is busy; a step to 12 runs 8, and 20% more throughput for a third more jobs running is a
    gain, where against the levels (12 over 7) it would have been stepped back as none."""
    state, at = ControllerState(level=7.0, idle_until=0.0), 0.0
    whys = []
    for _ in range(4 * 30):
        at += 0.25
        running, per_s = (6, 24.0) if state.level < 8 else (8, 29.0)
        state, decision = step(state, obs(at, 0.3, work=per_s / 4, running=running), CFG)
        whys.append(decision.why)
    assert Why.HOLD_IDLE not in whys[: whys.index(Why.GROW)] and Why.BACK_NO_GAIN not in whys, whys
    assert state.level >= 12


def test_breached_level_is_approached_slowly() -> None:
    cfg = ControllerTuning()
    state = ControllerState(level=4.0, idle_until=0.0, last_at=0.0)
    state, decision = step(state, obs(0.25, 1.25, running=4), cfg)  # a deep breach halves the level
    assert decision.why == Why.CUT_BREACH and decision.level == 2.0 and decision.breached_level == 4.0
    at, levels = 0.25, []
    for _ in range(4 * 120):  # two minutes of clean readings
        at += 0.25
        state, decision = step(state, obs(at, 0.3, work=setting(state.level) / 4, running=int(state.level)), cfg)
        levels.append(decision.level)
    assert max(levels) < 4.0, "back at the breached level within minutes of the breach"
    assert 3.0 <= levels[-1] < 4.0


def test_a_breach_the_readings_contradict_fades_in_a_few_windows() -> None:
    """A marginal breach just above a level (noise at a cold start), then windows far inside the
    budget: growth past it resumes within a few windows, not a memory half-life (300 s)."""
    state = ControllerState(level=0.25, idle_until=0.0, last_at=0.0)
    state, decision = step(state, obs(0.25, 1.04, running=1), CFG)
    assert decision.why == Why.CUT_BREACH and decision.breached_level == 0.25
    at, levels = 0.25, []
    for _ in range(4 * 90):  # 90 s of readings at 30% of the budget
        at += 0.25
        state, decision = step(state, obs(at, 0.3, work=state.level, running=1), CFG)
        levels.append(decision.level)
    assert max(levels) >= 1.0, max(levels)


def test_a_breach_a_lagging_reading_still_shows_is_remembered_at_the_level_that_caused_it() -> None:
    """Cut from 0.25 by a breach, the reading goes on showing it for a settling time; the hard cut
    after the cool-down remembers 0.25, not the level it was cut to, so the memory does not pin
    the level near the floor once the readings clear."""
    cfg = ControllerTuning(settle_s=6.0, cut_cooldown_s=5.0)
    state = ControllerState(level=0.25, idle_until=0.0, last_at=0.0)
    at = 0.0
    for _ in range(24):  # 6 s breached: a hard cut, recuts, a hard cut again
        at += 0.25
        state, decision = step(state, obs(at, 1.5, running=1), cfg)
    assert decision.level < 0.1 and decision.breached_level == 0.25, decision
    for _ in range(4 * 30):  # 30 s more breached: now it is the low levels' own doing
        at += 0.25
        state, decision = step(state, obs(at, 1.5, running=1), cfg)
    assert decision.breached_level is not None and decision.breached_level < 0.1, decision


def test_a_duty_cycle_window_waits_for_a_job_before_it_is_judged_idle() -> None:
    """At a low duty cycle the next start may be seconds away: a window that saw no job finish
    goes on measuring, and grows once one has, rather than holding as if there were no demand."""
    state = ControllerState(level=0.01, idle_until=0.0, last_at=0.0)
    at, whys = 0.0, []
    for i in range(4 * 10):
        at += 0.25
        state, decision = step(state, obs(at, 0.3, work=1.0 if i == 4 * 7 else 0.0, running=0), CFG)
        whys.append(decision.why)
    assert Why.HOLD_IDLE not in whys and Why.GROW in whys, whys
    assert state.level > 0.01


SCENARIOS = {
    # live share, per-job share, saturation: what bounds the best level
    "budget_bounds_concurrency": Plant(live=0.07, per_job=0.07),  # best 3 jobs at once, then 2
    "throughput_saturates": Plant(live=0.05, per_job=0.03, saturate=4),  # best 4 (the 5th buys nothing)
    "duty_cycle": Plant(live=0.12, per_job=0.25),  # best: one job 71% of the time, then 23%
}


def run(sim: Simulation, state: ControllerState, seconds: float) -> tuple[ControllerState, list[float], int]:
    """The controller on the plant for `seconds`: its state, the levels in force, breached intervals."""
    levels, breaches = [], 0
    level = state.level
    for _ in range(int(seconds / sim.interval)):
        o = sim.observe(level)
        if sim.plant.latency(setting(level) if level > 0 else 0.0) > sim.plant.budget:
            breaches += 1
        state, decision = step(state, o, CFG)
        level = decision.level
        levels.append(level)
    return state, levels, breaches


def near_best(levels: list[float], plant: Plant, tolerance: float) -> float:
    """The mean setting over the last quarter, as a share of the best feasible one."""
    tail = levels[-len(levels) // 4 :]
    mean = sum(setting(x) for x in tail) / len(tail)
    best = plant.best(CFG.dead_band)
    assert abs(mean - best) <= tolerance * best, f"mean {mean:.3f} vs best {best:.3f}"
    return mean


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_converges_near_the_best_level_and_again_when_the_live_load_doubles(name: str, seed: int) -> None:
    plant = msgspec_copy(SCENARIOS[name])
    sim = Simulation(plant, seed)
    state, levels, breaches = run(sim, ControllerState(), 600)
    near_best(levels, plant, 0.2)
    assert breaches / len(levels) < 0.03

    plant.live *= 2  # the live site's load doubles: the heavy work's room shrinks
    state, levels, breaches = run(sim, state, 600)
    near_best(levels, plant, 0.25 if plant.best(CFG.dead_band) >= 1 else 0.35)
    assert breaches / len(levels) < 0.03


def msgspec_copy(plant: Plant) -> Plant:
    return msgspec.structs.replace(plant)
