"""Chunks sized to a time target (pt-osc's --chunk-time, Spirit's dynamic chunking).

A resumable task asks `chunk_size()` for each chunk's row count; easeoff times the chunk
(from that call to the task's next yield) and sizes the next one so that a chunk takes
about `chunk_time` seconds, whatever a row costs today. A fixed batch size is right for one
table on one machine at one hour; a chunk's time is what the live site feels (locks held,
replica lag, an undo backlog), so that is what the task states.

The rule, in `ChunkSizer.observe`: a row's cost is the slower of the latest chunk's
seconds per row and a decaying average of recent chunks' (each chunk halves the weight of
the ones before). So

- a chunk that ran over target is followed at once by one sized to hit the target from
  that chunk alone;
- a chunk more than `PANIC_FACTOR` times over (the cost changed, not the noise) also
  replaces the average, so the old, cheaper rows stop pulling the size back up;
- a faster chunk grows the next as the average follows, and never more than
  `MAX_GROWTH` times at once: overshooting costs one slow chunk, growing is cheap to wait for.

The sizer's state (its size and average) is kept with the job's cursor (`JobMeta.chunking`),
so a resumed job starts at the size it learned. The target is read per chunk from a
callable: whatever else wants to cap a chunk's time later can pass one in.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

DEFAULT_CHUNK_TIME = 0.5  # seconds: pt-online-schema-change's --chunk-time
DEFAULT_INITIAL = 100
DEFAULT_MINIMUM = 1
DEFAULT_MAXIMUM = 100_000
PANIC_FACTOR = 4.0  # a chunk this many times over target: the cost changed; forget the average
MAX_GROWTH = 2.0  # the next chunk is at most this many times the last size
DECAY = 0.5  # the latest chunk's weight in the average of seconds per row

_CHUNK_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$")


def parse_chunk_time(value: object) -> float:
    """`0.5`, `"0.5s"`, `"500ms"` → seconds; ValueError says what is wrong.

    Local rather than feedback's duration parser: tasks/ keeps its imports from feedback to
    keys, connect and rate (tests/test_layers.py), and a chunk's time is sub-second."""
    if isinstance(value, bool):
        seconds = math.nan
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _CHUNK_TIME.match(value)):
        seconds = float(match.group(1)) / (1000.0 if match.group(2) == "ms" else 1.0)
    else:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"chunk_time {value!r}: give a time above zero, like 0.5, '0.5s' or '500ms'")
    return seconds


@dataclass(frozen=True)
class ChunkState:
    """What a job learned about its chunks, kept in its meta: the size to start from on resume,
    and the average seconds per row (None until a chunk was timed)."""

    size: int
    per_row: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "per_row": self.per_row}

    @classmethod
    def from_dict(cls, raw: object) -> ChunkState | None:
        """The stored state, or None (start afresh) if it is missing or damaged."""
        if not isinstance(raw, dict):
            return None
        size, per_row = raw.get("size"), raw.get("per_row")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            return None
        if per_row is not None:
            if isinstance(per_row, bool) or not isinstance(per_row, int | float):
                return None
            if not math.isfinite(per_row) or per_row < 0:
                return None
        return cls(size, None if per_row is None else float(per_row))


@dataclass(frozen=True)
class Chunk:
    """What a resumable task may yield instead of a bare cursor: the cursor and the rows the
    chunk really did (fewer than asked at the end of a range, or none where a range was empty).
    A bare cursor means the chunk did the size `chunk_size()` gave it."""

    cursor: Any
    rows: int


class ChunkSizer:
    """Proposes each chunk's row count from the (rows, seconds) of the chunks before it. Pure."""

    def __init__(
        self,
        initial: int = DEFAULT_INITIAL,
        chunk_time: float | Callable[[], float] = DEFAULT_CHUNK_TIME,
        minimum: int = DEFAULT_MINIMUM,
        maximum: int = DEFAULT_MAXIMUM,
        state: ChunkState | None = None,
    ) -> None:
        if minimum < 1 or maximum < minimum:
            raise ValueError(f"chunk sizes: need 1 <= minimum <= maximum, not {minimum}..{maximum}")
        if callable(chunk_time):
            self._target: Callable[[], float] = chunk_time
        else:
            fixed = parse_chunk_time(chunk_time)
            self._target = lambda: fixed
        self.minimum, self.maximum = minimum, maximum
        start = state.size if state is not None else initial
        self._size = self._bounded(start)
        self._per_row = state.per_row if state is not None else None

    @property
    def size(self) -> int:
        """The next chunk's row count."""
        return self._size

    @property
    def state(self) -> ChunkState:
        return ChunkState(self._size, self._per_row)

    def target(self) -> float | None:
        """This chunk's time target, or None if the callable gave no usable one."""
        try:
            value = float(self._target())
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) and value > 0 else None

    def observe(self, rows: int, seconds: float) -> int:
        """Learn from a chunk of `rows` rows that took `seconds`; returns the next size.

        A chunk that did no rows, or an unusable time, teaches nothing. No usable target
        (a callable that failed or gave NaN): the smallest chunk, since the one thing known
        is that nobody can say how long a chunk may take."""
        target = self.target()
        if target is None:
            self._size = self.minimum
            return self._size
        if rows <= 0 or not math.isfinite(seconds) or seconds < 0:
            return self._size
        latest = seconds / rows
        if seconds > PANIC_FACTOR * target or self._per_row is None:
            self._per_row = latest
        else:
            self._per_row = DECAY * latest + (1 - DECAY) * self._per_row
        per_row = max(latest, self._per_row)
        fits = target / per_row if per_row > 0 else math.inf
        self._size = self._bounded(min(fits, MAX_GROWTH * self._size))
        return self._size

    def _bounded(self, size: float) -> int:
        return max(self.minimum, min(self.maximum, math.floor(size)))


class ChunkRun:
    """One run of a resumable job: its sizer (made on the task's first `chunk_size()` call,
    with the task's bounds) and the clock of the chunk in progress."""

    def __init__(
        self,
        chunk_time: float | Callable[[], float] = DEFAULT_CHUNK_TIME,
        state: ChunkState | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chunk_time = chunk_time
        self.sizer: ChunkSizer | None = None
        self._state = state
        self._clock = clock
        self._started: float | None = None
        self._given = 0

    def size(self, initial: int, minimum: int, maximum: int) -> int:
        if self.sizer is None:
            self.sizer = ChunkSizer(initial, self.chunk_time, minimum, maximum, state=self._state)
        if self._started is None:  # the chunk's clock starts at its first ask
            self._started = self._clock()
        self._given = self.sizer.size
        return self._given

    def chunk_done(self, rows: int | None) -> None:
        """The task yielded: time the chunk that asked for a size (one that did not teaches nothing)."""
        if self._started is None or self.sizer is None:
            return
        seconds = self._clock() - self._started
        self._started = None
        self.sizer.observe(self._given if rows is None else rows, seconds)

    @property
    def state(self) -> ChunkState | None:
        """What to keep in the job's meta: the learned state, else what it resumed with."""
        return self.sizer.state if self.sizer is not None else self._state


_current: ContextVar[ChunkRun | None] = ContextVar("easeoff_chunk_run", default=None)


@contextlib.contextmanager
def sizing(run: ChunkRun) -> Iterator[ChunkRun]:
    """Make `run` the one `chunk_size()` answers from, while the runner drives the task."""
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)


def chunk_size(
    initial: int = DEFAULT_INITIAL, *, minimum: int = DEFAULT_MINIMUM, maximum: int = DEFAULT_MAXIMUM
) -> int:
    """How many rows the next chunk should do; call it for each chunk, then do that chunk, then yield.

    The first call of a run fixes the bounds and, for a job not yet sized, the starting size;
    a resumed job starts from the size it learned. Outside a resumable run (the generator
    called directly), `initial`."""
    run = _current.get()
    if run is None:
        return max(minimum, min(maximum, initial))
    return run.size(initial, minimum, maximum)
