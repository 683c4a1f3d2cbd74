"""The heavy jobs of scripts/bench/budget.py, importable by its workers (the benchmark puts
scripts/bench/ on their PYTHONPATH and names this module in their config's `[tasks] modules`).

Two shapes whose best operating point differs:

- `chunk_update` (shape a): one big UPDATE over a run of `items`, the table the live site
  reads and writes: CPU-bound on the server, and the live site's small updates that land in the
  run wait for its row locks. Even one at a time, back to back, hurts the live tail.
- `hold_and_wait` (shape b): locks a few rows of `ledger` (a table the live site never
  touches), then waits on I/O (a call to some other service, a sleep here) before it commits:
  little database work per job, so several at once cost the live site almost nothing.

Both take `pause`: after its work, a job sleeps `pause` times its own run time while still
holding its slot. At a limit of one that is a fixed pause between jobs (the oracle's paced
settings); easeoff's own pacing never passes it. Each job records its run time in `bench_runs`.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any
from urllib.parse import urlsplit

import pymysql

from easeoff.tasks.pool import borrow
from easeoff.tasks.registry import heavy_task

URL_ENV = "EASEOFF_BUDGET_BENCH_URL"
DATABASE = "budgetbench"
RESOURCE = "shard:1"


def connect() -> pymysql.connections.Connection:
    parts = urlsplit(os.environ.get(URL_ENV, "mysql://root@127.0.0.1:3306"))
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=DATABASE,
        connect_timeout=5,
        autocommit=False,
    )


def on_shard(**_: Any) -> list[str]:
    return [RESOURCE]


def _record(cur: Any, shape: str, began: float) -> float:
    took = time.perf_counter() - began
    cur.execute("INSERT INTO bench_runs (shape, took, done_at) VALUES (%s, %s, %s)", (shape, took, time.time()))
    return took


@heavy_task(queue="heavy", resources=on_shard, timeout=600)
def chunk_update(first: int, rows: int, pause: float = 0.0) -> float:
    """Rewrite `rows` rows of `items` from `first` in one statement (a backfill's chunk)."""
    with borrow(RESOURCE, connect) as conn, conn.cursor() as cur:
        began = time.perf_counter()
        cur.execute(
            "UPDATE items SET note = SHA2(CONCAT(note, id, counter), 256), counter = counter + 1 "
            "WHERE id BETWEEN %s AND %s",
            (first, first + rows - 1),
        )
        took = _record(cur, "a", began)
        conn.commit()
    if pause > 0:
        time.sleep(pause * took)
    return took


@heavy_task(queue="heavy", resources=on_shard, timeout=600)
def hold_and_wait(rows: int, wait: float, pause: float = 0.0, ledger_rows: int = 10000) -> float:
    """Lock `rows` random ledger rows, wait `wait` seconds on I/O holding them, commit."""
    picked = random.sample(range(1, ledger_rows + 1), rows)
    marks = ", ".join(["%s"] * rows)
    with borrow(RESOURCE, connect) as conn, conn.cursor() as cur:
        began = time.perf_counter()
        cur.execute(f"SELECT id, total FROM ledger WHERE id IN ({marks}) FOR UPDATE", picked)
        cur.fetchall()
        time.sleep(wait)
        cur.execute(f"UPDATE ledger SET total = total + 1 WHERE id IN ({marks})", picked)
        took = _record(cur, "b", began)
        conn.commit()
    if pause > 0:
        time.sleep(pause * took)
    return took
