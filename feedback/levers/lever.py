"""A lever as one module: a file in feedback/levers/ that defines `LEVER` brings everything the
lever is — the task options it accepts, its `[levers.NAME]` config table, its check, its metric
families and its command — and nothing else names it.

As dramatiq's middleware declares the actor options it accepts (and `actor` refuses any option
none declared), `@heavy_task(...)` takes a lever's options and refuses a keyword no lever
declares; the admission pipeline (workers/checks.py) runs each lever's check at its `order`
among the built-in checks; the exporter asks each for its families and the CLI for its
command. The built-in checks' places: the databases' health 100, shadow policies 200, ops'
switches 300, rates 400, concurrency slots 500 (which take a lease, so they come last). A check
that counts something (a start) before a later check refuses the job gives it back
(`give_back`), as the rates do for the slots.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from redis import Redis

from easeoff.feedback.config import Config, ConfigError
from easeoff.feedback.reasons import Verdict

if TYPE_CHECKING:
    import click
    from prometheus_client.metrics_core import Metric

HEALTH, SHADOW, SWITCHES, RATES, SLOTS = 100, 200, 300, 400, 500  # the built-in checks' places


class Claim(msgspec.Struct, frozen=True):
    """A claimed job as a lever's check sees it."""

    job_id: str
    queue: str
    task: str
    resources: tuple[str, ...]
    options: Mapping[str, Any]  # the task's lever options, as declared on `@heavy_task`
    execution: str  # the claim's execution: what a count is kept under, so it can be given back
    now: float


class LeverCheck(Protocol):
    def __call__(self, claim: Claim) -> Verdict | None:
        """None to go on, or a deferring verdict (the first that defers decides)."""

    def give_back(self, claim: Claim) -> None:
        """A later check refused the job: undo what this one counted for it."""


class Lever(Protocol):
    name: str  # its config table is `[levers.NAME]`
    order: int  # where its check runs among the built-in ones (above)
    options: type[msgspec.Struct] | None  # the `@heavy_task` keywords it accepts, typed
    settings: type[msgspec.Struct] | None  # its `[levers.NAME]` table, every field defaulted

    def check(self, redis: Redis, settings: Any) -> LeverCheck:
        """The check a worker runs on each claimed job."""

    def families(self, redis: Redis, settings: Any, now: float) -> list[Metric]:
        """What the exporter exports for it, read at each scrape."""

    def command(self) -> click.Command | None:
        """Its `easeoff` command, if it has one."""


class CommandContext(Protocol):
    """What a lever's command finds as click's context object (the `easeoff` CLI's): the config
    and a Redis connection, loaded when first asked for (a bad one exits 2 with one line)."""

    @property
    def config(self) -> Config: ...

    @property
    def redis(self) -> Redis: ...


class LeverError(ValueError):
    """A lever option or setting that cannot be taken: the message is one line naming it."""


_REGISTERED: list[Lever] = []


def register(lever: Lever) -> Lever:
    """A lever defined outside this folder (an app's own module, imported before its tasks are
    declared and in every worker, as its `[tasks] modules` are)."""
    if all(known.name != lever.name for known in levers()):
        _REGISTERED.append(lever)
    return lever


def levers() -> tuple[Lever, ...]:
    """Every lever: each defined in this folder, and each registered, in admission order."""
    return tuple(sorted((*_in_this_folder(), *_REGISTERED), key=lambda lever: (lever.order, lever.name)))


@cache
def _in_this_folder() -> tuple[Lever, ...]:
    from easeoff.feedback import levers as package

    found = []
    for module in pkgutil.iter_modules(package.__path__):
        lever = getattr(importlib.import_module(f"{package.__name__}.{module.name}"), "LEVER", None)
        if lever is not None:
            found.append(lever)
    return tuple(found)


def task_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """`@heavy_task`'s keywords that are lever options, checked by their levers' types and stored
    as plain values (the job's meta carries them); a keyword no lever declares is refused."""
    declared = {field: lever for lever in levers() if lever.options for field in lever.options.__struct_fields__}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise LeverError(f"unknown option {unknown[0]!r} (lever options: {known})")
    checked: dict[str, Any] = {}
    for lever in {id(declared[name]): declared[name] for name in given}.values():
        assert lever.options is not None
        mine = {name: value for name, value in given.items() if declared[name] is lever}
        try:
            typed = msgspec.convert(mine, lever.options)
        except msgspec.ValidationError as exc:
            raise LeverError(f"{lever.name} option: {exc}") from None
        checked.update({k: v for k, v in msgspec.to_builtins(typed).items() if k in mine})
    return checked


def lever_settings(tables: Mapping[str, Any]) -> dict[str, Any]:
    """Each lever's settings from the config's `[levers.NAME]` tables (its defaults where absent);
    a table naming no lever, or a setting its lever cannot take, is refused in one line."""
    by_name = {lever.name: lever for lever in levers()}
    unknown = sorted(set(tables) - {name for name, lever in by_name.items() if lever.settings})
    if unknown:
        raise LeverError(f"levers.{unknown[0]}: no lever of that name takes settings")
    settings: dict[str, Any] = {}
    for name, lever in by_name.items():
        if lever.settings is None:
            continue
        try:
            settings[name] = msgspec.convert(tables.get(name, {}), lever.settings)
        except msgspec.ValidationError as exc:
            raise LeverError(f"levers.{name}: {exc}") from None
    return settings


def settings_for(config: Config) -> dict[str, Any]:
    """`lever_settings` of the config's tables, a problem raised as the config's own error."""
    try:
        return lever_settings(config.levers)
    except LeverError as exc:
        key, _, problem = str(exc).partition(": ")
        raise ConfigError(config.source, key, problem) from None


def lever_families(redis: Redis, settings: Mapping[str, Any], now: float) -> list[Metric]:
    """Every lever module's metric families, for the exporter's scrape."""
    return [family for lever in levers() for family in lever.families(redis, settings.get(lever.name), now)]


def lever_commands() -> dict[str, click.Command]:
    """Every lever module's `easeoff` command, by its name."""
    found = {}
    for lever in levers():
        command = lever.command()
        if command is not None and command.name:
            found[command.name] = command
    return found
