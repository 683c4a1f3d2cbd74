"""`easeoff top --once` on real Redis: the queues with their counts and sparkline, verdicts and events."""

from __future__ import annotations

import time

import pytest
from redis import Redis

from easeoff.feedback.config import load_config
from easeoff.feedback.levers import events
from easeoff.feedback.observe.history import HistorySampler
from easeoff.tasks.catalog import noop
from easeoff.workers.cli.top import BLOCKS, sparkline
from tests.conftest import run_cli

MARKS = """
[queues.heavy.watermarks.depth]
high = 3
low = 1
"""


def row(output: str, first_cell: str) -> list[str]:
    """The cells of the table row that starts with `first_cell`."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


def test_top_once_shows_queues_verdicts_and_events(redis_conn: Redis, write_config) -> None:
    path = write_config(extra=MARKS)
    for _ in range(4):
        noop.enqueue(shard=1, connection=redis_conn)
    HistorySampler(redis_conn, load_config(path)).maybe_sample()
    events.record(redis_conn, "annotation", "backfill [bold]started[/bold]", who="carol", why="ticket OPS-7")

    result = run_cli("--config", str(path), "top", "--once")

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    _, ready, deferred, running, failed, age, spark, marks = row(out, "heavy")
    assert (ready, deferred, running, failed) == ("4", "0", "0", "0")
    assert age.endswith("s")
    assert spark and spark[-1] == BLOCKS[-1], spark  # the one sample, at full height, at the right end
    assert marks == "depth high 3 / low 1"
    assert row(out, "archive")[1:5] == ["0", "0", "0", "0"]
    assert row(out, "shard:1")[1:] == ["defer", "no_reading:db1"]  # nobody probed: fail closed
    at = time.strftime("%H:%M:%S", time.localtime(events.recent(redis_conn, 1)[0].at))
    annotation = row(out, at)
    assert annotation[1:] == ["annotation", "carol", "backfill [bold]started[/bold]", "ticket OPS-7"]  # no markup


@pytest.mark.unit
def test_sparkline_columns_are_time_slices_scaled_to_the_highest_value() -> None:
    assert sparkline([(0, 0), (50, 4), (99, 8)], 0, 100, 10) == "▁    ▅   █"
    assert sparkline([(10, 3), (12, 7)], 0, 100, 10) == " █        "  # the highest value in a slice
    assert sparkline([], 0, 100, 10) == ""
    assert sparkline([(500, 1)], 0, 100, 10) == ""  # nothing inside the span
