"""Chunks sized to a time target (tasks/chunking.py): the pure sizer's rule, its properties on a
simulated per-row cost that steps tenfold, and the task-facing `chunk_size()` around it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easeoff.tasks import Chunk, TaskError, chunk_size, heavy_task
from easeoff.tasks.chunking import (
    MAX_GROWTH,
    ChunkRun,
    ChunkSizer,
    ChunkState,
    parse_chunk_time,
    sizing,
)
from easeoff.tasks.meta import JobMeta
from easeoff.tasks.resumable import run_resumable

pytestmark = pytest.mark.unit

TARGET = 0.5


def simulate(sizer: ChunkSizer, seconds_for: Callable[[int, int], float], chunks: int) -> list[tuple[int, float]]:
    """Run `chunks` chunks: each does the size proposed and takes `seconds_for(index, rows)`."""
    done = []
    for index in range(chunks):
        rows = sizer.size
        seconds = seconds_for(index, rows)
        done.append((rows, seconds))
        sizer.observe(rows, seconds)
    return done


def test_a_chunk_on_target_keeps_its_size_and_a_fast_one_grows_at_most_twofold() -> None:
    assert ChunkSizer(initial=100, chunk_time=TARGET).observe(100, TARGET) == 100
    assert ChunkSizer(initial=100, chunk_time=TARGET).observe(100, TARGET / 10) == 200  # 10x room, capped
    sizer = ChunkSizer(initial=100, chunk_time=TARGET)
    sizer.observe(100, TARGET)
    assert sizer.observe(100, TARGET / 10) == 181  # the average moves halfway: 2 / (1 + 0.1)


def test_a_chunk_far_over_target_is_cut_at_once_to_hit_the_target_from_that_chunk_alone() -> None:
    sizer = ChunkSizer(initial=1000, chunk_time=TARGET)
    for _ in range(5):
        sizer.observe(1000, TARGET)
    assert sizer.observe(1000, 10 * TARGET) == 100
    assert sizer.observe(100, TARGET) == 100  # on target at the new cost: it holds


def test_after_a_chunk_far_over_target_the_cheap_history_no_longer_pulls_the_size_up() -> None:
    sizer = ChunkSizer(initial=1000, chunk_time=TARGET)
    sizer.observe(1000, TARGET)
    assert sizer.observe(1000, 10 * TARGET) == 100
    # a faster chunk next grows the size only as the average of the new cost follows (133),
    # not as the average with the old rows would have it (190)
    assert sizer.observe(100, TARGET / 2) == 133


def test_a_chunk_somewhat_over_target_is_cut_to_fit_too() -> None:
    sizer = ChunkSizer(initial=1000, chunk_time=TARGET)
    sizer.observe(1000, TARGET / 4)  # fast history: the average says rows are cheap
    assert sizer.size == 2000
    assert sizer.observe(2000, 2 * TARGET) <= 1000  # the latest chunk wins over the average


def test_bounds_hold_and_a_resumed_sizer_starts_from_its_state() -> None:
    sizer = ChunkSizer(initial=50, chunk_time=TARGET, minimum=10, maximum=300)
    assert sizer.observe(50, 100 * TARGET) == 10
    for _ in range(10):
        sizer.observe(sizer.size, TARGET / 100)
    assert sizer.size == 300
    resumed = ChunkSizer(initial=50, chunk_time=TARGET, minimum=10, maximum=300, state=sizer.state)
    assert resumed.size == 300
    assert resumed.state == sizer.state


def test_chunks_that_teach_nothing_change_nothing() -> None:
    sizer = ChunkSizer(initial=100, chunk_time=TARGET)
    for rows, seconds in ((0, 1.0), (100, math.nan), (100, -1.0), (100, math.inf)):
        assert sizer.observe(rows, seconds) == 100
    assert sizer.observe(100, 0.0) == 200  # instant: as fast as allowed to grow


def test_the_target_is_read_per_chunk_and_none_usable_means_the_smallest_chunk() -> None:
    targets = iter([TARGET, TARGET / 2, math.nan])
    sizer = ChunkSizer(initial=100, chunk_time=lambda: next(targets), minimum=5)
    assert sizer.observe(100, TARGET) == 100
    assert sizer.observe(100, TARGET) == 50  # a cap halved between chunks halves the next one
    assert sizer.observe(50, TARGET / 4) == 5  # fail closed: nobody says how long a chunk may take


@pytest.mark.parametrize(("value", "seconds"), [(0.5, 0.5), (2, 2.0), ("0.5s", 0.5), ("500ms", 0.5), (" 1.5 s ", 1.5)])
def test_chunk_times_as_people_type_them(value: object, seconds: float) -> None:
    assert parse_chunk_time(value) == seconds


@pytest.mark.parametrize("value", [0, -1, "0s", "fast", "1m", True, None, math.nan, math.inf])
def test_bad_chunk_times_are_refused_with_the_value_named(value: object) -> None:
    with pytest.raises(ValueError, match="chunk_time"):
        parse_chunk_time(value)


def test_heavy_task_declares_its_chunk_time_and_refuses_bad_ones() -> None:
    def gen(cursor: int | None = None) -> Iterator[int]:
        yield 1

    gen.__module__ = __name__
    task = heavy_task(queue="heavy", resumable=True, chunk_time="250ms", name="chunk_time_declared")(gen)
    assert task.chunk_time == 0.25
    with pytest.raises(TaskError, match="chunk_time 'soon'"):
        heavy_task(queue="heavy", resumable=True, chunk_time="soon")
    with pytest.raises(TaskError, match="only a resumable task"):
        heavy_task(queue="heavy", chunk_time=0.5)


def test_job_meta_keeps_the_learned_state_and_drops_a_damaged_one() -> None:
    meta = JobMeta(task="t", resumable=True, cursor=7, chunks=3, chunking=ChunkState(420, 0.001))
    assert JobMeta.from_dict(meta.to_dict()) == meta
    assert "chunking" not in JobMeta(task="t").to_dict()
    for damaged in ("x", {"size": 0}, {"size": 5, "per_row": "fast"}, {"size": 5, "per_row": -1.0}, {"size": True}):
        raw = {**meta.to_dict(), "chunking": damaged}
        assert JobMeta.from_dict(raw).chunking is None
        assert JobMeta.from_dict(raw).cursor == 7  # the rest of the meta survives
    infinite = JobMeta.from_dict({**meta.to_dict(), "deferrals": float("inf")})  # json reads Infinity
    assert (infinite.deferrals, infinite.cursor) == (0, 7)  # the damaged count alone falls back


def test_chunk_size_outside_a_run_is_the_initial_size_within_bounds() -> None:
    assert chunk_size() == 100
    assert chunk_size(500, maximum=200) == 200


def test_a_run_times_each_chunk_from_its_first_ask_to_its_yield() -> None:
    now = [0.0]
    run = ChunkRun(TARGET, clock=lambda: now[0])
    with sizing(run):
        now[0] += 1.0  # setup before the first ask is not the chunk's: its clock starts at the ask
        assert chunk_size(100) == 100
        now[0] += TARGET / 8
        assert chunk_size(999) == 100  # asked twice in one chunk: same size, same clock
        now[0] += TARGET / 8
        run.chunk_done(None)  # a bare cursor: the chunk did the size it was given
        now[0] += 5.0  # the runner's checkpoint between chunks is not the chunk's either
        assert chunk_size() == 200
        now[0] += TARGET
        run.chunk_done(50)  # it said it did 50 rows in the target time: 50 rows fit
        assert chunk_size() == 50
        now[0] += TARGET
        run.chunk_done(None)
        now[0] += 100.0
        run.chunk_done(None)  # a yield with no ask: nothing to time
    assert run.state is not None and run.state.size == 50
    assert chunk_size() == 100  # the run is over: outside again


def test_the_runner_unwraps_chunks_and_sizes_each_inline() -> None:
    asked: list[int] = []

    def walk(last: int, cursor: int | None = None) -> Iterator[object]:
        position = cursor or 0
        while position < last:
            size = chunk_size(10)
            asked.append(size)
            rows = min(size, last - position)
            position += rows
            yield Chunk(position, rows) if rows < size else position

    assert run_resumable(walk, (100,), {}, chunk_time=60.0) == 100  # a target no stall reaches
    assert asked[0] == 10 and asked[1] == 20  # instant chunks: each grows the next twofold
    assert all(b <= MAX_GROWTH * a for a, b in itertools.pairwise(asked))


# -- properties ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    initial=st.integers(1, 200_000),
    minimum=st.integers(1, 50),
    span=st.integers(0, 50_000),
    chunks=st.lists(
        st.tuples(st.integers(-1, 100_000), st.floats(0, 100) | st.just(math.nan) | st.just(-1.0)), max_size=40
    ),
)
def test_sizes_stay_in_bounds_grow_at_most_twofold_and_cut_after_any_chunk_over_target(
    initial: int, minimum: int, span: int, chunks: list[tuple[int, float]]
) -> None:
    sizer = ChunkSizer(initial, TARGET, minimum, minimum + span)
    assert minimum <= sizer.size <= minimum + span
    for rows, seconds in chunks:
        before = sizer.size
        after = sizer.observe(rows, seconds)
        assert minimum <= after <= minimum + span
        assert after <= max(minimum, MAX_GROWTH * before)
        if rows > 0 and math.isfinite(seconds) and seconds > TARGET:
            assert after <= max(minimum, rows * TARGET / seconds * (1 + 1e-9))


@settings(max_examples=300, deadline=None)
@given(
    fit=st.floats(20, 20_000),  # rows that fit the target before the step
    overhead=st.floats(0, 0.1),  # a chunk's fixed cost (commit, round trips), in targets
    step=st.sampled_from([10.0, 0.1]),  # the per-row cost steps tenfold up, or down
    initial=st.integers(1, 100_000),
    noise=st.lists(st.floats(0.9, 1.1), min_size=60, max_size=60),
)
def test_chunk_times_settle_near_the_target_and_follow_a_tenfold_step_in_row_cost(
    fit: float, overhead: float, step: float, initial: int, noise: list[float]
) -> None:
    per_row = TARGET * (1 - overhead) / fit
    at = 30

    def seconds_for(index: int, rows: int) -> float:
        cost = per_row * (step if index >= at else 1.0)
        return (TARGET * overhead + cost * rows) * noise[index]

    times = [s / TARGET for _, s in simulate(ChunkSizer(initial, TARGET), seconds_for, 60)]
    settled_before = times[20:at]  # from 5000x too small, twofold steps take 13 chunks
    settle_after = 1 if step > 1 else 12  # cut at once; grow back as the average follows
    settled_after = times[at + settle_after :]
    # A chunk is sized from the last one's time, noise and all: measured 10% fast (0.9) and run 10%
    # slow (1.1), with a fixed cost of up to a tenth it can come out at (0.1 + 1/0.9) * 1.1 = 1.33
    # of the target however good the sizing (hypothesis found 1.27; 1.25 was too tight a bound).
    ceiling = (0.1 + 1 / 0.9) * 1.1
    for ratio in settled_before + settled_after:
        assert 0.4 <= ratio <= ceiling, times
    if step > 1:
        assert times[at] > 4  # the chunk that met the step ran far over ...
        assert times[at + 1] <= ceiling  # ... and the very next one is back on target


def test_a_fixed_size_would_not_hold_the_target_through_the_same_step() -> None:
    """The simulation the properties use, with the sizer's output ignored: the check bites."""
    fixed = ChunkSizer(initial=1000, chunk_time=TARGET, minimum=1000, maximum=1000)
    times = [s for _, s in simulate(fixed, lambda i, rows: rows * (TARGET / 1000) * (10 if i >= 5 else 1), 10)]
    assert max(times[6:]) > 1.25 * TARGET
