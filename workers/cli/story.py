"""One job's story (`easeoff job ID`) and its end on request (`easeoff cancel ID...`).

The reading lives in workers/job_place.py and the cancel in workers/cancel.py; these commands
only print them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import click

from easeoff.feedback import clock
from easeoff.tasks.registry import get_task
from easeoff.workers.cancel import cancel as cancel_job
from easeoff.workers.cli.helpers import Context, fail, guarded, one_line, pass_context
from easeoff.workers.job_place import JobStory, Wait, read_job

WAIT_WORDS = {
    "resource": "resource {subject} to clear",
    "task": "its task to be resumed ({subject} is paused)",
    "slot": "a concurrency slot of {subject}",
    "slot_low": "a concurrency slot of {subject} (low priority: behind normal jobs)",
    "turn": "its task's turn at {subject}'s slots",
    "rate": "the rate of {subject}",
    "dependency": "job {subject} to finish",
}


@click.command("job")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
@guarded
def job(ctx: Context, job_id: str, as_json: bool) -> None:
    """Where job JOB_ID is and why: its place, what it waits for, its deferrals and outcome."""
    story = read_job(ctx.redis, job_id, retries_allowed=_task_retries(ctx))
    if story is None:
        fail(f"no such job {one_line(job_id)!r}")
    if as_json:
        click.echo(json.dumps(story.as_dict(), indent=2, default=str))
        return
    for line in describe(story, clock.now()):
        click.echo(line)


def describe(story: JobStory, now: float) -> list[str]:
    """The story as lines for a terminal: where first, then why, then what came of it."""
    lines = [f"job {story.id}: {_where(story, now)}"]
    lines.append(f"  task       {story.task} on queue {story.queue}  ({story.description})")
    lines.append(f"  resources  {', '.join(story.resources) or 'none'}")
    for wait in story.waits:
        lines.append(f"  waits for  {_wait(wait, now)}")
    if story.deferrals:
        first = f", first {_ago(story.first_deferred_at, now)}" if story.deferrals > 1 else ""
        cap = f"; fails if still deferred {_at(story.expires_at, now)}" if story.expires_at else ""
        lines.append(f"  deferrals  {story.deferrals}, last {_ago(story.deferred_at, now)}{first}{cap}")
        for reason in story.last_reasons:
            lines.append(f"    because  {reason}")
    if story.resumable and (story.chunks or story.cursor is not None):
        lines.append(f"  progress   {story.chunks} chunks, cursor {json.dumps(story.cursor, default=str)}")
    lines += _retry_lines(story)
    if story.stop_requested or story.cancel_requested:
        why = "canceled" if story.cancel_requested else story.stop_requested
        lines.append(f"  stopping   asked to stop at its next checkpoint: {why}")
    if story.enqueued_at:
        lines.append(f"  enqueued   {_ago(story.enqueued_at, now)}")
    if story.ended_at and story.state in ("finished", "failed", "stopped"):
        lines.append(f"  ended      {_ago(story.ended_at, now)}")
    if story.state == "finished":
        lines.append(f"  result     {one_line(json.dumps(story.result, default=str))[:300]}")
    if story.error:
        lines.append(f"  error      {story.error}")
    return lines


def _retry_lines(story: JobStory) -> list[str]:
    """Both kinds of retries, used and left; nothing for a job that has neither."""
    lines = []
    retries = story.retries
    if retries is not None and (retries.used or retries.allowed):
        of = f" of {retries.allowed}" if retries.allowed is not None else ""
        left = f", {max(retries.allowed - retries.used, 0)} left" if retries.allowed is not None else ""
        last = f" (last for: {retries.last_error})" if retries.last_error else ""
        lines.append(f"  retries    {retries.used}{of} used on transient errors{left}{last}")
    if retries is not None and retries.rq_left is not None:
        used = f"{retries.rq_used} of {retries.rq_max} used, " if retries.rq_used is not None else ""
        intervals = f", intervals {retries.rq_intervals}s" if retries.rq_intervals else ""
        lines.append(f"  rq retry   {used}{retries.rq_left} left{intervals}")
    if story.retried:
        lines.append(f"  rq retry   the task returned Retry {story.retried} times")
    return lines


def _task_retries(ctx: Context) -> Callable[[str], int | None]:
    """A task's transient retries by its name, from the app's task modules (loaded on first use);
    None where they cannot be loaded here (an operator's machine without the app) or the task is unknown."""

    def allowed(name: str) -> int | None:
        try:
            ctx.load_tasks()
            return get_task(name).retries
        except Exception:
            return None

    return allowed


def _where(story: JobStory, now: float) -> str:
    state = story.state
    if state == "queued":
        if story.position is None:
            return f"queued on {story.queue} (its dependencies just met)"
        return f"queued on {story.queue}, position {story.position} of {story.queue_length}"
    if state == "running":
        since = f" since {_ago(story.started_at, now)}" if story.started_at else ""
        owner = f", owner {story.owner}" if story.owner else ", handed over by rq (no easeoff claim)"
        beat = f", last beat {_ago(story.last_heartbeat, now)}" if story.last_heartbeat else ""
        return f"running on worker {story.worker or '?'}{since}{owner}{beat}"
    if state == "parked":
        latest = f" (at the latest {_at(story.due, now)})" if story.due else ""
        return f"deferred and parked: back on {story.queue} once what it waits for clears{latest}"
    if state == "deferred":
        return f"deferred: back on {story.queue} {_at(story.due, now)}"
    if state == "scheduled":
        return f"scheduled: enqueued on {story.queue} {_at(story.due, now)}"
    if state == "waiting_on_dependency":
        return f"waiting on a job it depends on, then queued on {story.queue}"
    if state == "unplaced":
        return f"in no queue or registry (rq status {story.status or 'none'})"
    return state


def _wait(wait: Wait, now: float) -> str:
    text = WAIT_WORDS[wait.kind].format(subject=wait.subject)
    if wait.kind == "dependency":
        return f"{text} (now {wait.detail})"
    if wait.kind == "rate" and wait.until is not None:
        return f"{text} (its start reserved {_at(wait.until, now)})"
    return text


def _at(ts: float | None, now: float) -> str:
    if ts is None:
        return "(unknown)"
    moment = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = ts - now
    return f"in {_span(delta)} ({moment})" if delta >= 0 else f"{_span(-delta)} ago ({moment}, due)"


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "(unknown)"
    moment = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{_span(max(now - ts, 0.0))} ago ({moment})"


def _span(seconds: float) -> str:
    """12.3s, 4m05s, 23h59m: a duration as an operator reads it."""
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes}m{int(seconds % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


@click.command("cancel")
@click.argument("job_ids", nargs=-1, required=True)
@pass_context
@guarded
def cancel(ctx: Context, job_ids: tuple[str, ...]) -> None:
    """Cancel JOB_IDs: a queued, scheduled, deferred, parked or dependent job is removed at once
    (atomically, nothing else touched); a running one is asked to stop (resumable: at its next
    checkpoint; else rq's stop-job command). Exit 2 if any is unknown or has already ended."""
    redis = ctx.redis
    missing, ended = [], []
    for job_id in job_ids:
        done = cancel_job(redis, job_id)
        if done.outcome == "missing":
            missing.append(job_id)
        elif done.outcome == "not_waiting":
            ended.append(job_id)
            click.echo(f"{job_id}: not canceled: it has ended ({done.detail or 'no status'})")
        elif done.outcome == "canceled":
            click.echo(f"{job_id}: canceled (was {done.detail.replace('_', ' ')})")
        else:
            click.echo(f"{job_id}: running: asked to stop ({done.detail})")
    if missing:
        fail(f"no such job {one_line(missing[0])!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if ended:
        fail(f"{len(ended)} of {len(job_ids)} jobs had already ended")
