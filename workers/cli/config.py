"""`easeoff config check` and `easeoff config init`."""

from __future__ import annotations

import os

import click

from easeoff.tasks.registry import all_tasks
from easeoff.workers.cli.helpers import Context, fail, guarded, pass_context
from easeoff.workers.scheduler import all_schedules, check_schedules


@click.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@pass_context
@guarded
def config_check(ctx: Context) -> None:
    """Validate the config file; exit 2 with the file and key of the first problem."""
    config = ctx.config
    ctx.load_tasks()
    check_schedules(config)
    click.echo(
        f"{config.source}: ok ({len(config.hosts)} hosts, {len(config.resources)} resources, "
        f"{len(config.signals)} signals, {len(config.queues)} queues, {len(all_tasks())} tasks, "
        f"{len(all_schedules(config))} schedules; "
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
