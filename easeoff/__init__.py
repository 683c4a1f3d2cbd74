"""easeoff: heavy database jobs on rq that ease off while MySQL is strained.

The public face for apps. Declare a task, enqueue it, and let `easeoff worker` run it:

    from easeoff import heavy_task

    @heavy_task(queue="recount", resources=lambda shard, **_: [f"shard:{shard}"])
    def bump_recount(shard: int) -> None: ...

    bump_recount.delay(shard=3)   # to the config's Redis ($EASEOFF_CONFIG, ./easeoff.toml)

The installed package is one namespace: the repository's top-level `tasks/`, `feedback/`
and `workers/` install as `easeoff.tasks`, `easeoff.feedback` and `easeoff.workers`
(pyproject's package-dir), so an app's own `tasks` module never collides with ours.
Names here are loaded on first use, so importing one room does not import the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"  # the one place it is written: pyproject reads it from here

if TYPE_CHECKING:
    from easeoff.feedback.config import Config, ConfigError, load_config
    from easeoff.feedback.connect import connect
    from easeoff.feedback.signals.traffic import count_request
    from easeoff.tasks.periodic import periodic
    from easeoff.tasks.registry import HeavyTask, TaskError, UnknownTaskError, heavy_task

_PUBLIC = {
    "heavy_task": "easeoff.tasks.registry",
    "periodic": "easeoff.tasks.periodic",
    "HeavyTask": "easeoff.tasks.registry",
    "TaskError": "easeoff.tasks.registry",
    "UnknownTaskError": "easeoff.tasks.registry",
    "Config": "easeoff.feedback.config",
    "ConfigError": "easeoff.feedback.config",
    "load_config": "easeoff.feedback.config",
    "connect": "easeoff.feedback.connect",
    "count_request": "easeoff.feedback.signals.traffic",
}

__all__ = [
    "Config",
    "ConfigError",
    "HeavyTask",
    "TaskError",
    "UnknownTaskError",
    "connect",
    "count_request",
    "heavy_task",
    "load_config",
    "periodic",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'easeoff' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
