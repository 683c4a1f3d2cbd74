"""Enqueue jobs, run a gated worker on them, and see and put back the ones that failed."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import click
import msgspec
import msgspec.structs
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.observe.failed_jobs import failure_reason as reason_of
from easeoff.feedback.observe.failed_jobs import latest_results
from easeoff.tasks.meta import JobMeta, task_name
from easeoff.tasks.registry import get_task
from easeoff.workers.cli.helpers import Context, fail, guarded, pass_context
from easeoff.workers.moves import JobMoves
from easeoff.workers.scheduler import check_schedules

if TYPE_CHECKING:
    from redis import Redis


@click.command()
@click.argument("name")
@click.option("--args", "args_json", default="[]", help="JSON list of positional arguments, or object of keywords.")
@click.option("--kwargs", "kwargs_json", default="{}", help="JSON object of keyword arguments.")
@click.option("--count", default=1, type=click.IntRange(1, 1_000_000), help="Enqueue this many identical jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print the enqueued jobs as a JSON list (every one).")
@pass_context
@guarded
def enqueue(ctx: Context, name: str, args_json: str, kwargs_json: str, count: int, as_json: bool) -> None:
    """Enqueue heavy task NAME with JSON arguments.

    Example: easeoff enqueue archive_old_rows --args '{"shard": 1}'
    """
    ctx.load_tasks()
    task = get_task(name)
    args, kwargs = _parse_arguments(args_json, kwargs_json)
    task.check_arguments(args, kwargs)
    connection, known = ctx.redis, frozenset(ctx.config.resources)
    jobs = [task.enqueue(*args, connection=connection, known_resources=known, **kwargs) for _ in range(count)]
    if as_json:
        click.echo(json.dumps([msgspec.structs.asdict(enqueued(job)) for job in jobs], indent=2))
        return
    for job in jobs[:10]:
        click.echo(f"enqueued {job.id} on {task.queue}: {job.description}")
    if count > 10:
        click.echo(f"... and {count - 10} more")


class EnqueuedJob(msgspec.Struct, frozen=True):
    """What `enqueue --json` prints of each job: enough to follow it (`easeoff status`, rq)."""

    id: str
    queue: str
    task: str
    resources: list[str]
    args: list[Any]
    kwargs: dict[str, Any]
    enqueued_at: str | None
    description: str


def enqueued(job: Job) -> EnqueuedJob:
    meta = JobMeta.of(job)
    return EnqueuedJob(
        id=job.id,
        queue=job.origin,
        task=task_name(job),
        resources=list(meta.resources or ()),
        args=list(job.args),
        kwargs=dict(job.kwargs),
        enqueued_at=job.enqueued_at.isoformat() if job.enqueued_at else None,
        description=job.description or "",
    )


def _parse_arguments(args_json: str, kwargs_json: str) -> tuple[list[Any], dict[str, Any]]:
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        fail(f"--args is not valid JSON: {exc.msg} at position {exc.pos}")
    try:
        kwargs = json.loads(kwargs_json)
    except json.JSONDecodeError as exc:
        fail(f"--kwargs is not valid JSON: {exc.msg} at position {exc.pos}")
    if isinstance(args, dict):
        keywords: dict[str, Any] = dict(args)
        args, kwargs = [], {**keywords, **(kwargs if isinstance(kwargs, dict) else {})}
    if not isinstance(args, list):
        fail("--args must be a JSON list (positional) or object (keywords)")
    if not isinstance(kwargs, dict):
        fail("--kwargs must be a JSON object")
    return args, kwargs


@click.command()
@click.argument("queues", nargs=-1, required=True)
@click.option("--burst", is_flag=True, help="Quit once no job is ready and none is deferred.")
@click.option("--name", default=None, help="Worker name (default: rq's).")
@click.option("--max-jobs", type=click.IntRange(1), default=None, help="Quit after this many jobs.")
@click.option("--verbose", "-v", is_flag=True, help="Log every gate decision (as --log-level debug).")
@click.option(
    "--path", "-P", "paths", multiple=True, metavar="DIR", help="Import task modules from DIR too (as rq's -P)."
)
@click.option("--any-queue", is_flag=True, help="Listen on QUEUES even if neither the config nor a task names them.")
@click.option(
    "--in-process",
    is_flag=True,
    help="Run each job in the worker's own process (rq's SimpleWorker), not a work horse forked per job.",
)
@pass_context
@guarded
def worker(
    ctx: Context,
    queues: tuple[str, ...],
    burst: bool,
    name: str | None,
    max_jobs: int | None,
    verbose: bool,
    paths: tuple[str, ...],
    any_queue: bool,
    in_process: bool,
) -> None:
    """Run a gated worker on QUEUES (highest priority first)."""
    from easeoff.feedback.replica_acks import keep_waiting
    from easeoff.feedback.signals.cache import ReadingsCache

    config = ctx.config
    level = ctx.log_level or ("DEBUG" if verbose else "INFO")
    ctx.add_paths(paths)
    keep_waiting(ctx.redis)  # a worker's writes wait for their replica (replica_acks), never fail on it
    # The first probes run while the app's task modules and the worker's own load: its first
    # claim need not wait for them.
    readings = ReadingsCache(ctx.redis, config)
    readings.warm_up()
    try:
        ctx.load_tasks()  # a task module that cannot be imported stops the worker here, not its jobs
        check_schedules(config)  # so does a schedule naming an unknown task, or giving it bad arguments
        if not any_queue:
            ctx.check_queues(queues, insist_with="--any-queue")
        from easeoff.workers.gated_worker import GatedWorker
        from easeoff.workers.in_process import InProcessWorker

        kind = InProcessWorker if in_process else GatedWorker
        w = kind(list(queues), connection=ctx.redis, config=config, name=name, readings=readings)
    except BaseException:
        readings.close()  # its probe leases go back at once, not after they lapse
        raise
    log = logging.getLogger("rq.worker")  # the worker's own logger: rq sets it to `level` in work()
    log.setLevel(level.upper())
    log.info("Worker %s: config %s, Redis %s", w.name, config.source, config.redis_url_redacted)
    w.work(burst=burst, max_jobs=max_jobs, logging_level=level.upper())


class FailedJob(msgspec.Struct, frozen=True):
    id: str
    queue: str
    task: str
    failed_at: str
    reason: str


def failed_jobs(redis: Redis, queue: str, limit: int) -> list[FailedJob]:
    """The newest `limit` failed jobs of `queue`, each with the one line that says why (passwords
    masked). Nothing is unpickled: jobs are read as JSON, of their results only `exc_string`."""
    registry = FailedJobRegistry(queue, connection=redis, serializer=JSONSerializer)
    ids = registry.get_job_ids(-limit, -1) if limit else registry.get_job_ids()
    found = []
    jobs = Job.fetch_many(ids, connection=redis, serializer=JSONSerializer)  # one round trip, not one a job
    results = latest_results(redis, ids)
    for job_id, job, latest in reversed(list(zip(ids, jobs, results, strict=True))):
        if job is None:
            found.append(FailedJob(job_id, queue, "?", "", "job data expired"))
            continue
        task = task_name(job)
        ended = job.ended_at.strftime("%Y-%m-%d %H:%M:%S") if job.ended_at else ""
        found.append(FailedJob(job.id, queue, task, ended, reason_of(job, latest)))
    return found


def failure_reason(job: Job) -> str:
    """The last line of the failure, passwords masked: the exception and its message, or
    easeoff's own reason (read as `failed_jobs` reads it: `return_value` is never loaded)."""
    return reason_of(job, latest_results(job.connection, [job.id])[0])


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
        click.echo(json.dumps([msgspec.structs.asdict(j) for j in jobs], indent=2))
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
