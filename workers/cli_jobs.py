"""Failed jobs from the command line: list them with their reasons, and put them back.

`easeoff failed` reads rq's failed registries; `easeoff requeue` moves a job back to its
queue in one transaction, its easeoff meta kept. Registered in workers/cli.py, like the
switch commands.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import click
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.tasks.meta import task_name
from easeoff.workers.cli_observability import fail, guarded, pass_context
from easeoff.workers.moves import JobMoves

if TYPE_CHECKING:
    from redis import Redis

    from easeoff.workers.cli import Context


@dataclass(frozen=True)
class FailedJob:
    id: str
    queue: str
    task: str
    failed_at: str
    reason: str


def failed_jobs(redis: Redis, queue: str, limit: int) -> list[FailedJob]:
    """The newest `limit` failed jobs of `queue`, each with the one line that says why."""
    registry = FailedJobRegistry(queue, connection=redis, serializer=JSONSerializer)
    ids = registry.get_job_ids(0, -1)[-limit:] if limit else registry.get_job_ids()
    found = []
    for job_id in reversed(ids):
        try:
            job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
        except NoSuchJobError:
            found.append(FailedJob(job_id, queue, "?", "", "job data expired"))
            continue
        task = task_name(job)
        ended = job.ended_at.strftime("%Y-%m-%d %H:%M:%S") if job.ended_at else ""
        found.append(FailedJob(job.id, queue, task, ended, failure_reason(job)))
    return found


def failure_reason(job: Job) -> str:
    """The last line of the failure: the exception and its message, or easeoff's own reason."""
    result = job.latest_result()
    text = result.exc_string if result is not None and result.exc_string else (job._exc_info or "")
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else "no reason recorded"


@click.command("failed")
@click.argument("queues", nargs=-1)
@click.option("--limit", default=20, type=click.IntRange(0), help="At most this many per queue, newest first (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
@guarded
def failed(ctx: Context, queues: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List failed jobs of QUEUES (default: every known queue) with the reason each failed."""
    if queues:
        ctx.check_queues(queues)
    names = list(queues) or ctx.known_queues()
    jobs = [job for name in names for job in failed_jobs(ctx.redis, name, limit)]
    if as_json:
        click.echo(json.dumps([asdict(j) for j in jobs], indent=2))
        return
    if not jobs:
        click.echo("no failed jobs")
        return
    click.echo(f"{'JOB':<38}{'QUEUE':<12}{'TASK':<22}{'FAILED AT':<21}REASON")
    for j in jobs:
        click.echo(f"{j.id:<38}{j.queue:<12}{j.task:<22}{j.failed_at:<21}{j.reason}")


@click.command("requeue")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "all_of", metavar="QUEUE", default=None, help="Every failed job of QUEUE.")
@pass_context
@guarded
def requeue(ctx: Context, job_ids: tuple[str, ...], all_of: str | None) -> None:
    """Put failed jobs back on their queues (JOB_ID..., or --all QUEUE), their easeoff meta kept."""
    if bool(job_ids) == bool(all_of):
        fail("give JOB_IDs or --all QUEUE (one of the two)")
    redis, moves = ctx.redis, JobMoves(ctx.redis)
    if all_of is not None:
        ctx.check_queues([all_of])
        targets = [(job_id, all_of) for job_id in FailedJobRegistry(all_of, connection=redis).get_job_ids()]
    else:
        targets = [(job_id, _origin(redis, job_id)) for job_id in job_ids]
    moved = sum(1 for job_id, queue in targets if moves.requeue_failed(job_id, queue))
    click.echo(f"requeued {moved} of {len(targets)} jobs")
    if moved < len(targets):
        fail(f"{len(targets) - moved} jobs were no longer in a failed registry")


def _origin(redis: Redis, job_id: str) -> str:
    """The queue a failed job came from; an unknown id is an error naming it."""
    origin = redis.hget(Job.key_for(job_id), "origin")
    if origin is None:
        fail(f"no such job {job_id!r}")
    return origin.decode() if isinstance(origin, bytes) else str(origin)
