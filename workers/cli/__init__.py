"""`easeoff`: the command line that wires config into tasks, feedback and the gated worker.

The group and its options live here; each command lives in the module of its topic
(config, jobs, state, switches, observability, top) and shares helpers.py.
"""

from __future__ import annotations

import logging
import sys

import click

from easeoff.workers.cli import config, jobs, observability, state, switches, top
from easeoff.workers.cli.helpers import EXIT_BAD_INPUT, Context, one_line


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


for command in (
    config.config_group,
    jobs.enqueue,
    jobs.worker,
    jobs.failed,
    jobs.requeue,
    state.status,
    state.probe,
    state.host_group,
    observability.exporter,
    observability.alerts_group,
    observability.dashboard_group,
    top.top,
    *switches.COMMANDS,
):
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
