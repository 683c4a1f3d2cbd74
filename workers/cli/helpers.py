"""What every `easeoff` command shares: the lazily loaded context, and one-line failures.

Every expected failure prints one line naming what is wrong: bad config, unknown task or bad
arguments exit 2, a Redis that cannot be reached exits 1, as rq's commands do (rq's
`rq/cli/helpers.py` plays the same part for rq's commands), so a supervisor can tell an outage
worth a restart from a typo that no restart fixes. The command modules import this one; nothing imports them
but the group in `__init__.py`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, NoReturn

import click
import redis
from redis import Redis

from easeoff.feedback.config import Config, ConfigError, load_config
from easeoff.feedback.connect import REDIS_UNREACHABLE, connect
from easeoff.feedback.queue_names import known_queue_names
from easeoff.tasks.registry import TaskError, all_tasks, load_task_modules

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 1  # rq's exit code when Redis cannot be reached


class Failure(click.ClickException):
    """One line on stderr, exit 2."""

    exit_code = EXIT_BAD_INPUT


class Unavailable(Failure):
    """A server that cannot be reached: one line on stderr, exit 1."""

    exit_code = EXIT_UNAVAILABLE


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
        except redis.exceptions.AuthenticationError as exc:  # a ConnectionError, but a wrong password: exit 2
            fail(f"Redis refused the credentials: {_first_line(exc)}")
        except REDIS_UNREACHABLE as exc:
            ctx = click.get_current_context()
            url = ctx.obj.config.redis_url_redacted if ctx.obj and ctx.obj.loaded else "?"
            raise Unavailable(f"cannot reach Redis at {url}: {_first_line(exc)}") from None

    return wrapper


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


class Context:
    """Config, the app's task modules and the Redis connection, loaded lazily so `--help` needs none."""

    def __init__(
        self,
        config_path: str | None,
        imports: Sequence[str] = (),
        paths: Sequence[str] = (),
        log_level: str | None = None,
    ) -> None:
        self.config_path = config_path
        self.log_level = log_level  # `--log-level`; None leaves each command its own default
        self.imports = tuple(imports)
        self._config: Config | None = None
        self._redis: Redis | None = None
        self._tasks_loaded = False
        self._app_paths: list[str] = []
        self.add_paths(paths)

    def add_paths(self, paths: Sequence[str]) -> None:
        """Where the app's task modules are imported from: these, then the current directory (as
        `rq worker -P`), so `easeoff` finds an app's `myapp.tasks` run from the app's folder.
        Checked now, put on `sys.path` when the task modules load (`load_tasks`)."""
        for path in paths:
            if not os.path.isdir(path):
                fail(f"--path {path}: no such directory")
        added = [os.path.abspath(p) for p in [*paths, os.getcwd()]]
        self._app_paths = list(dict.fromkeys([*added, *self._app_paths]))
        use_app_paths(self._app_paths, add=self._tasks_loaded)

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
            use_app_paths(self._app_paths)
            load_task_modules(self.imports or self.config.task_modules)
            self._tasks_loaded = True

    def known_queues(self) -> list[str]:
        """Queues the config or a loaded task names, then any other queue rq has seen."""
        self.load_tasks()
        task_queues = [t.queue for t in all_tasks().values()]
        return known_queue_names(self.redis, dict.fromkeys([*self.config.queues, *task_queues]))

    def check_queues(self, queues: Sequence[str], insist_with: str = "") -> None:
        """A misspelled queue would be listened on, or paused, in silence: refuse it (`insist_with`
        names the option that overrides the check, where there is one)."""
        known = self.known_queues()
        hint = f"; {insist_with} to use it anyway" if insist_with else ""
        for queue in queues:
            if queue not in known:
                fail(f"unknown queue {queue!r} (known: {', '.join(known) or 'none'}{hint})")


def use_app_paths(paths: Sequence[str], add: bool = True) -> None:
    """Put the app's folders on `sys.path` AFTER the interpreter's own (the standard library,
    site-packages), moving them there if `python -m` put the current directory first: a module
    the environment provides (rich, pymysql, prometheus_client, redis, rq, click, msgspec) is
    never taken from the app's folder, where a planted `rich.py` would run in every command. An
    app module named like an installed one is shadowed by it: name the app's package uniquely.
    `add=False` only moves back those already there (the start of every command)."""
    present = [path for path in paths if path in sys.path]
    for path in present:
        while path in sys.path:
            sys.path.remove(path)
    sys.path.extend(paths if add else present)


pass_context = click.make_pass_decorator(Context)
