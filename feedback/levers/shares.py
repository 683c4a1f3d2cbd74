"""Tasks that want one tight resource share its slots by weight: stride scheduling.

When a resource's limit (fixed, adapted, or set by its budget) is smaller than the demand, a
free slot is the turn of one waiting task. Each task keeps a virtual pass; a slot it is granted
moves its pass on by 1/weight (its stride); the slot goes to the waiting task with the lowest
pass, the one that has had least for its weight (Waldspurger and Weihl's stride scheduling).
Over any run of grants, a task of weight 3 beside one of weight 1 gets three slots to one,
each within a slot of its exact share. A task that arrives, or comes back after a spell away,
starts level with the others: no credit is banked while it did not want the resource.

The rules run inside feedback/lua/share.lua (acquire.lua, release_slots.lua), atomically with
the slots; this module states them as pure functions, which tests/test_shares.py checks the
scripts against.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ACTIVE = 3.0  # seconds: a task that asked (or was handed a slot) this recently still counts as wanting
FORGET = 600.0  # seconds: a task neither waiting nor asking for this long is dropped from the scope's hash
EPSILON = 1e-9  # passes this close are equal (float sums of strides)


def stride(weight: float) -> float:
    """How far one granted slot moves a task's pass."""
    return 1.0 / weight


def level(active: Iterable[float], known: Iterable[float]) -> float:
    """Where a task that comes starts: the lowest pass of the tasks active, else (none is) the
    highest pass known, else 0. Never below a task it will compete with, so it brings no credit."""
    active, known = list(active), list(known)
    if active:
        return min(active)
    return max(known, default=0.0)


def rejoin(own: float | None, start: float) -> float:
    """A task's pass as it comes (back): a new one starts at `start`; one that was away is raised to it."""
    return start if own is None else max(own, start)


def goes_first(passes: Mapping[str, float], heads: Mapping[str, float]) -> str | None:
    """The waiting task whose turn it is: the lowest pass, ties to the one whose oldest job is due
    first (`heads`: task → its oldest parked job's due time; only waiting tasks are in it)."""
    best: str | None = None
    for task, head in heads.items():
        if best is None:
            best = task
            continue
        gap = passes[task] - passes[best]
        if gap < -EPSILON or (abs(gap) <= EPSILON and head < heads[best]):
            best = task
    return best


def before(task: str, passes: Mapping[str, float], waiting: Iterable[str]) -> str | None:
    """The waiting task (not `task`) that a free slot is for instead of `task`, if any: the lowest
    pass strictly below `task`'s. Equal passes do not hold a task back."""
    others = [w for w in waiting if w != task]
    if not others:
        return None
    first = min(others, key=lambda w: passes[w])
    return first if passes[first] < passes[task] - EPSILON else None


def take_turns(weights: Mapping[str, float], slots: int) -> dict[str, int]:
    """The grants each task gets of `slots` slots, all of them waiting throughout, from level
    passes: what `goes_first` and `stride` make of a tight resource."""
    passes = dict.fromkeys(weights, 0.0)
    granted = dict.fromkeys(weights, 0)
    order = {task: float(i) for i, task in enumerate(weights)}  # a fixed tie-break, as due times give
    for _ in range(slots):
        task = goes_first(passes, order)
        assert task is not None
        passes[task] += stride(weights[task])
        granted[task] += 1
    return granted
