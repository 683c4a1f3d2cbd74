"""`easeoff`: the command line that wires config into tasks, feedback and the gated worker.

The group and its options live here; each command lives in the module of its topic
(config, jobs, schedules, story, state, switches, observability, top) and shares helpers.py.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from easeoff.feedback.levers.lever import lever_commands
from easeoff.workers import logs
from easeoff.workers.cli.helpers import EXIT_BAD_INPUT, Context, Failure, one_line

# Each command, by name: the module of its topic and the object there. A command's module is
# imported when the command runs (or `--help` lists it), not at every start: `easeoff worker`
# does not load the exporter, the page or `top` (click's lazily loaded subcommands).
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("config", "config_group"),
    "enqueue": ("jobs", "enqueue"),
    "worker": ("jobs", "worker"),
    "failed": ("jobs", "failed"),
    "requeue": ("jobs", "requeue"),
    "schedules": ("schedules", "schedules"),
    "scheduler": ("schedules", "scheduler"),
    "job": ("story", "job"),
    "cancel": ("story", "cancel"),
    "status": ("state", "status"),
    "probe": ("state", "probe"),
    "host": ("state", "host_group"),
    "exporter": ("observability", "exporter"),
    "alerts": ("observability", "alerts_group"),
    "dashboard": ("observability", "dashboard_group"),
    "top": ("top", "top"),
    "pause": ("switches", "pause"),
    "resume": ("switches", "resume"),
    "throttle": ("switches", "throttle"),
    "unthrottle": ("switches", "unthrottle"),
    "threshold": ("switches", "threshold"),
    "switches": ("switches", "switches"),
    "log": ("switches", "log"),
    "annotate": ("switches", "annotate"),
}


class LazyGroup(click.Group):
    """A group whose commands are imported by name, when wanted."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS, *lever_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, name = COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(f"{__name__}.{module}"), name), cmd_name)
        elif cmd_name not in self.commands and cmd_name in (from_levers := lever_commands()):
            self.add_command(from_levers[cmd_name], cmd_name)  # a lever module's own (feedback/levers/)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="easeoff", prog_name="easeoff", message="%(prog)s %(version)s")
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
@click.option(
    "--log-level",
    type=click.Choice(logs.LEVELS, case_sensitive=False),
    envvar="EASEOFF_LOG_LEVEL",
    help="Level of easeoff's and rq's logs (default: warning; info for the worker and exporter, debug with -v).",
)
@click.option(
    "--log-format",
    type=click.Choice(logs.FORMATS),
    default="text",
    envvar="EASEOFF_LOG_FORMAT",
    show_default=True,
    help="json: one object a line (time, level, logger, message; job_id, queue, task where known).",
)
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    imports: tuple[str, ...],
    paths: tuple[str, ...],
    log_level: str | None,
    log_format: logs.LogFormat,
) -> None:
    """easeoff: heavy database jobs that ease off when MySQL is strained."""
    logs.configure(log_level, log_format)
    ctx.obj = Context(config_path, imports, paths, log_level=log_level)


def main(argv: list[str] | None = None) -> None:
    """The `easeoff` entry point: exits 0; 2 on bad input and 1 when Redis cannot be reached (as
    rq's commands do), each with one line on stderr; 130 on Ctrl-C."""
    logging.basicConfig(level=logging.WARNING, format=logs.TEXT_FORMAT)
    try:
        code = cli.main(args=argv, prog_name="easeoff", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"easeoff: error: {one_line(exc.format_message())}{hint}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except click.ClickException as exc:  # Failure, Unavailable, and click's own (a file it cannot open, ...)
        click.echo(f"easeoff: error: {one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code if isinstance(exc, Failure) else EXIT_BAD_INPUT)
    except (KeyboardInterrupt, click.Abort):
        sys.exit(130)
    if isinstance(code, int) and code:  # `--version` and `--help` end through click's Exit(0)
        sys.exit(code)


if __name__ == "__main__":
    main()
