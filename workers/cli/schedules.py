"""`easeoff schedules` (each periodic job, its next and last run) and `easeoff scheduler`."""

from __future__ import annotations

import json
import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

import click
import msgspec
import msgspec.structs

from easeoff.feedback import clock
from easeoff.feedback.connect import REDIS_UNREACHABLE
from easeoff.feedback.durations import age_text
from easeoff.workers.cli.helpers import Context, guarded, pass_context
from easeoff.workers.scheduler import Scheduler, ScheduleState, check_schedules, schedule_states


@click.command("schedules")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (times in Unix seconds).")
@pass_context
@guarded
def schedules(ctx: Context, as_json: bool) -> None:
    """List the periodic jobs: their task, when they run, the next run and the last one."""
    ctx.load_tasks()
    check_schedules(ctx.config)
    redis = ctx.redis  # connects: the fleet's clock (Redis's) from here on
    now = clock.now()
    states = schedule_states(redis, ctx.config, now)
    if as_json:
        click.echo(json.dumps([msgspec.structs.asdict(s) for s in states], indent=2))
        return
    if not states:
        click.echo("no schedules (add [schedules.NAME] to the config, or @periodic on a task)")
        return
    rows = [("NAME", "TASK", "WHEN", "NEXT", "LAST")] + [_row(s, now) for s in states]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[4]]).rstrip())


def _row(s: ScheduleState, now: float) -> tuple[str, str, str, str, str]:
    when = s.when if s.origin == "config" else f"{s.when} (on the task)"
    due = s.next_run - now
    next_text = f"{_stamp(s.next_run)} ({'in ' + age_text(due) if due > 0 else 'due now'})"
    if s.last_error:
        last = f"{_stamp(s.last_tick)} not enqueued: {s.last_error}"
    elif s.last_job and s.last_at is not None:
        last = f"{_stamp(s.last_tick)} {s.last_job} ({age_text(now - s.last_at)} ago)"
        if s.last_missed:
            last += f", once for the {s.last_missed} tick(s) missed before it"
    else:
        last = f"never (scheduled since {_stamp(s.since)})" if s.since else "never (no worker has seen it yet)"
    return s.name, s.task, when, next_text, last


def _stamp(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.command("scheduler")
@click.option("--once", is_flag=True, help="Enqueue what is due now and exit (for an outside timer).")
@pass_context
@guarded
def scheduler(ctx: Context, once: bool) -> None:
    """Enqueue periodic jobs as their ticks come, beside the workers (which do it too).

    Workers enqueue them as one of their fleet duties, between jobs; run this where every worker
    may be busy with long jobs for longer than a tick may wait. Any number may run: each tick is
    enqueued once.
    """
    ctx.load_tasks()
    config = ctx.config
    check_schedules(config)
    log = logging.getLogger("easeoff.scheduler")
    log.setLevel((ctx.log_level or "INFO").upper())
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    every = min(1.0, config.probe_interval)
    seen: dict[str, int] = {}
    log.info("scheduler: config %s, Redis %s, looking every %gs", config.source, config.redis_url_redacted, every)
    redis = ctx.redis
    while True:
        try:
            Scheduler(redis, config, log, seen=seen).run(clock.now())
        except REDIS_UNREACHABLE as exc:  # nothing is claimed without its job: ride the outage out
            if once:
                raise
            log.warning("scheduler: Redis away (%s); trying again", exc)
        if once or stop.wait(every):
            return
