"""`easeoff`: the command line that wires config into tasks, feedback and the gated worker.

Every expected failure — bad config, unknown task, bad arguments, a server that
cannot be reached — prints one line naming what is wrong and exits 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, NoReturn

import click
import redis
from redis import Redis

from easeoff.feedback import events, unknown_resources
from easeoff.feedback.cache import ReadingsCache
from easeoff.feedback.config import Config, ConfigError, load_config
from easeoff.feedback.connect import REDIS_UNREACHABLE, connect
from easeoff.feedback.hosts_out import mark_in, mark_out
from easeoff.feedback.queue_stats import known_queue_names, queue_stats
from easeoff.feedback.report import global_report, held_queues, resources_report, switches_report, traffic_report
from easeoff.feedback.snapshot import Snapshot
from easeoff.tasks.registry import TaskError, all_tasks, get_task, load_task_modules

EXIT_BAD_INPUT = 2


class Failure(click.ClickException):
    """One line on stderr, exit 2."""

    exit_code = EXIT_BAD_INPUT


def one_line(text: str) -> str:
    """Control characters (a newline in a task name, say) escaped, so an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def fail(message: str) -> NoReturn:
    raise Failure(message)


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors users cause into one-line failures instead of tracebacks."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ConfigError, TaskError) as exc:
            fail(str(exc))
        except REDIS_UNREACHABLE as exc:
            ctx = click.get_current_context()
            url = ctx.obj.config.redis_url_redacted if ctx.obj and ctx.obj.loaded else "?"
            fail(f"cannot reach Redis at {url}: {_first_line(exc)}")
        except redis.exceptions.AuthenticationError as exc:
            fail(f"Redis refused the credentials: {_first_line(exc)}")

    return wrapper


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


class Context:
    """Config, the app's task modules and the Redis connection, loaded lazily so `--help` needs none."""

    def __init__(self, config_path: str | None, imports: Sequence[str] = (), paths: Sequence[str] = ()) -> None:
        self.config_path = config_path
        self.imports = tuple(imports)
        self._config: Config | None = None
        self._redis: Redis | None = None
        self._tasks_loaded = False
        self.add_paths(paths)

    def add_paths(self, paths: Sequence[str]) -> None:
        """Where the app's task modules are imported from: these first, then the current directory
        (as `rq worker -P`), so `easeoff` finds an app's `myapp.tasks` run from the app's folder."""
        for path in reversed([*paths, os.getcwd()]):
            absolute = os.path.abspath(path)
            if not os.path.isdir(absolute):
                fail(f"--path {path}: no such directory")
            if absolute in sys.path:
                sys.path.remove(absolute)
            sys.path.insert(0, absolute)

    @property
    def loaded(self) -> bool:
        return self._config is not None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            client = connect(self.config)
            client.ping()
            self._redis = client
        return self._redis

    def load_tasks(self) -> None:
        """Import the task modules `--import` names, else the config's `[tasks] modules`."""
        if not self._tasks_loaded:
            load_task_modules(self.imports or self.config.task_modules)
            self._tasks_loaded = True

    def known_queues(self) -> list[str]:
        """Queues the config or a loaded task names, then any other queue rq has seen."""
        self.load_tasks()
        task_queues = [t.queue for t in all_tasks().values()]
        return known_queue_names(self.redis, [*self.config.queues, *dict.fromkeys(task_queues)])

    def check_queues(self, queues: Sequence[str], insist_with: str = "") -> None:
        """A misspelled queue would be listened on, or paused, in silence: refuse it (`insist_with`
        names the option that overrides the check, where there is one)."""
        known = self.known_queues()
        hint = f"; {insist_with} to use it anyway" if insist_with else ""
        for queue in queues:
            if queue not in known:
                fail(f"unknown queue {queue!r} (known: {', '.join(known) or 'none'}{hint})")


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    envvar="EASEOFF_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML config file (default: $EASEOFF_CONFIG, else ./easeoff.toml, else the packaged example).",
)
@click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="A module declaring heavy tasks (repeatable); replaces the config's [tasks] modules.",
)
@click.option(
    "--path",
    "-P",
    "paths",
    multiple=True,
    metavar="DIR",
    help="Import task modules from DIR too (repeatable); the current directory always is.",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, imports: tuple[str, ...], paths: tuple[str, ...]) -> None:
    """easeoff: heavy database jobs that ease off when MySQL is strained."""
    ctx.obj = Context(config_path, imports, paths)


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@pass_context
@guarded
def config_check(ctx: Context) -> None:
    """Validate the config file; exit 2 with the file and key of the first problem."""
    config = ctx.config
    ctx.load_tasks()
    click.echo(
        f"{config.source}: ok ({len(config.hosts)} hosts, {len(config.resources)} resources, "
        f"{len(config.signals)} signals, {len(config.queues)} queues, {len(all_tasks())} tasks; "
        f"probe every {config.probe_interval:g}s)"
    )


@config_group.command("init")
@click.argument("path", default="easeoff.toml", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def config_init(path: str, force: bool) -> None:
    """Write a commented config to PATH (default ./easeoff.toml, where easeoff looks first)."""
    from easeoff.feedback.config import packaged_example_path

    target = os.path.abspath(path)
    if os.path.exists(target) and not force:
        fail(f"{path} exists; --force to overwrite it")
    try:
        with open(target, "w", encoding="utf-8") as out:
            out.write(packaged_example_path().read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    click.echo(
        f"wrote {path}: name your task modules under [tasks], your hosts and resources, then `easeoff config check`"
    )


@cli.command()
@click.argument("name")
@click.option("--args", "args_json", default="[]", help="JSON list of positional arguments, or object of keywords.")
@click.option("--kwargs", "kwargs_json", default="{}", help="JSON object of keyword arguments.")
@click.option("--count", default=1, type=click.IntRange(1, 1_000_000), help="Enqueue this many identical jobs.")
@pass_context
@guarded
def enqueue(ctx: Context, name: str, args_json: str, kwargs_json: str, count: int) -> None:
    """Enqueue heavy task NAME with JSON arguments.

    Example: easeoff enqueue archive_old_rows --args '{"shard": 1}'
    """
    ctx.load_tasks()
    task = get_task(name)
    args, kwargs = _parse_arguments(args_json, kwargs_json)
    task.check_arguments(args, kwargs)
    connection, known = ctx.redis, frozenset(ctx.config.resources)
    jobs = [task.enqueue(*args, connection=connection, known_resources=known, **kwargs) for _ in range(count)]
    for job in jobs[:10]:
        click.echo(f"enqueued {job.id} on {task.queue}: {job.description}")
    if count > 10:
        click.echo(f"... and {count - 10} more")


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
        args, kwargs = [], {**args, **(kwargs if isinstance(kwargs, dict) else {})}
    if not isinstance(args, list):
        fail("--args must be a JSON list (positional) or object (keywords)")
    if not isinstance(kwargs, dict):
        fail("--kwargs must be a JSON object")
    return args, kwargs


@cli.command()
@click.argument("queues", nargs=-1, required=True)
@click.option("--burst", is_flag=True, help="Quit once no job is ready and none is deferred.")
@click.option("--name", default=None, help="Worker name (default: rq's).")
@click.option("--max-jobs", type=click.IntRange(1), default=None, help="Quit after this many jobs.")
@click.option("--verbose", "-v", is_flag=True, help="Log every gate decision.")
@click.option(
    "--path", "-P", "paths", multiple=True, metavar="DIR", help="Import task modules from DIR too (as rq's -P)."
)
@click.option("--any-queue", is_flag=True, help="Listen on QUEUES even if neither the config nor a task names them.")
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
) -> None:
    """Run a gated worker on QUEUES (highest priority first)."""
    from easeoff.workers.gated_worker import GatedWorker

    config = ctx.config
    ctx.add_paths(paths)
    ctx.load_tasks()  # a task module that cannot be imported stops the worker here, not its jobs
    if not any_queue:
        ctx.check_queues(queues, insist_with="--any-queue")
    w = GatedWorker(list(queues), connection=ctx.redis, config=config, name=name)
    w.work(burst=burst, max_jobs=max_jobs, logging_level="DEBUG" if verbose else "INFO")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
@guarded
def status(ctx: Context, as_json: bool) -> None:
    """Queues (ready, deferred, running, failed, oldest age) and each resource's verdict."""
    config, connection = ctx.config, ctx.redis
    stats = queue_stats(connection, known_queue_names(connection, config.queues))
    snapshot = ReadingsCache(connection, config).stored()
    held = held_queues(config, [s.name for s in stats], snapshot, time.time())
    report = {
        "queues": {
            s.name: {**{k: v for k, v in s.as_dict().items() if k != "name"}, "held": held[s.name]} for s in stats
        },
        **_feedback_report(config, snapshot, unknown_resources.read(connection, config.resources)),
        "switches": switches_report(snapshot, time.time()),
        "audit": [e.as_dict() for e in events.recent(connection, 5, events.OPERATOR_KINDS)],
    }
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    click.echo(f"{'QUEUE':<16}{'READY':>8}{'DEFERRED':>10}{'RUNNING':>9}{'FAILED':>8}{'OLDEST':>10}  HELD")
    for s in stats:
        why = "; ".join(held[s.name]) or "-"
        click.echo(
            f"{s.name:<16}{s.ready:>8}{s.deferred:>10}{s.running:>9}{s.failed:>8}{s.oldest_ready_age_s:>9.1f}s  {why}"
        )
    click.echo("")
    _print_feedback(report)
    click.echo("")
    click.echo("SWITCHES")
    for s in report["switches"]:
        click.echo(f"  {s['describe']}  by {s['by']}: {s['why']}")
    if not report["switches"]:
        click.echo("  none")
    click.echo("RECENT CHANGES (easeoff log)")
    for e in report["audit"]:
        stamp = time.strftime("%H:%M:%S", time.localtime(e["at"]))
        click.echo(f"  {stamp} {e['who']}: {e['text']}" + (f" ({e['why']})" if e["why"] else ""))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
@guarded
def probe(ctx: Context, as_json: bool) -> None:
    """Probe every host and traffic source now; show each signal's value, thresholds and state."""
    config, connection = ctx.config, ctx.redis
    snapshot = ReadingsCache(connection, config).probe_now()
    report = _feedback_report(config, snapshot, unknown_resources.read(connection, config.resources))
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    _print_feedback(report)


def _feedback_report(
    config: Config, snapshot: Snapshot, unknown: Sequence[unknown_resources.UnknownResource] = ()
) -> dict[str, Any]:
    now = time.time()
    return {
        "global": global_report(config, snapshot, now),
        "traffic": traffic_report(config, snapshot, now),
        "resources": resources_report(config, snapshot, now, unknown),
    }


def _print_feedback(report: dict[str, Any]) -> None:
    overall = report["global"]
    click.echo(f"GLOBAL          {overall['verdict']}")
    for reason in overall["reasons"]:
        click.echo(f"{'':<16}- {reason}")
    for name, t in report["traffic"].items():
        value = "?" if t["value"] is None else f"{t['value']:.4g}"
        scope = t["scope"] if isinstance(t["scope"], str) else ",".join(t["scope"])
        click.echo(
            f"  {name:<14}{t['source']:<11}{value:>10}  high {t['high']:g} low {t['low']:g}  {t['state']} ({scope})"
        )
    click.echo("")
    click.echo(f"{'RESOURCE':<16}{'VERDICT':<9}REASONS")
    for name, info in report["resources"].items():
        click.echo(f"{name:<16}{info['verdict']:<9}{'; '.join(info['reasons']) or '-'}")
        for critical in info["critical"]:
            click.echo(f"{'':<25}CRITICAL {critical}")
        for host, h in info["hosts"].items():
            state = f"OUT ({h['out']})" if h["out"] else (f"probe error: {h['error']}" if h["error"] else "")
            click.echo(f"  {host:<14}{h['role']:<9}{state}")
            for signal, v in h["signals"].items():
                value = "?" if v["value"] is None else f"{v['value']:.4g}"
                limits = f"high {v['high']:g} low {v['low']:g}" if "high" in v else v.get("note", "")
                click.echo(f"    {signal:<16}{value:>10}  {limits:<24}{v['state']}")


@cli.group("host")
def host_group() -> None:
    """Take a MySQL host out of production, or put it back."""


@host_group.command("out")
@click.argument("host")
@click.option("--reason", required=True, help="Why: shown in every verdict it causes.")
@click.option("--by", default=None, help="Who (default: the current user).")
@pass_context
@guarded
def host_out(ctx: Context, host: str, reason: str, by: str | None) -> None:
    """Mark HOST out: work on a pair it belongs to waits; a replica leaves the aggregate."""
    _known_host(ctx.config, host)
    mark_out(ctx.redis, host, reason, by)
    click.echo(f"{host} is out of production: {reason}")


@host_group.command("in")
@click.argument("host")
@click.option("--reason", default="", help="Why (for the log).")
@click.option("--by", default=None, help="Who (default: the current user).")
@pass_context
@guarded
def host_in(ctx: Context, host: str, reason: str, by: str | None) -> None:
    """Put HOST back into production."""
    _known_host(ctx.config, host)
    was_out = mark_in(ctx.redis, host, by, reason)
    click.echo(f"{host} is in production" + ("" if was_out else " (it was not out)"))


def _known_host(config: Config, host: str) -> None:
    if host not in config.hosts:
        fail(f"unknown host {host!r} (known: {', '.join(config.hosts) or 'none'})")


from easeoff.workers.cli_observability import alerts_group, dashboard_group, exporter  # noqa: E402 - needs `cli` above

cli.add_command(exporter)
cli.add_command(alerts_group)
cli.add_command(dashboard_group)

from easeoff.workers.cli_top import top  # noqa: E402 - needs `cli` above

cli.add_command(top)

from easeoff.workers.cli_jobs import failed, requeue  # noqa: E402 - needs `cli` above
from easeoff.workers.cli_switches import COMMANDS as SWITCH_COMMANDS  # noqa: E402 - needs `cli` above

cli.add_command(failed)
cli.add_command(requeue)

for command in SWITCH_COMMANDS:
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """The `easeoff` entry point: exits 0, 2 on bad input (one line on stderr), 130 on Ctrl-C."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cli.main(args=argv, prog_name="easeoff", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"easeoff: error: {one_line(exc.format_message())}{hint}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except click.ClickException as exc:  # Failure, and click's own (a file it cannot open, ...)
        click.echo(f"easeoff: error: {one_line(exc.format_message())}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except (KeyboardInterrupt, click.Abort):
        sys.exit(130)


if __name__ == "__main__":
    main()
