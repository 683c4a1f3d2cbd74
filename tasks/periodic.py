"""Schedules declared on a task: `@periodic(cron="0 2 * * *")` above `@heavy_task(...)`.

The app's code says when its task runs, as it says its queue and resources; the config's
`[schedules.NAME]` tables say the same from the operator's side, and a config schedule of the
same name replaces the task's (ops retime a job without a deploy). The fleet's workers enqueue
both kinds alike (workers/scheduler.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from easeoff.feedback.schedules import Schedule, ScheduleError, make_schedule
from easeoff.tasks.registry import HeavyTask, TaskError

_SCHEDULES: dict[str, Schedule] = {}


def periodic(
    cron: str | None = None,
    every: str | float | None = None,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
    timezone: str = "UTC",
) -> Callable[[HeavyTask], HeavyTask]:
    """Enqueue the task below on a schedule: `cron` (five fields or `@daily`, in `timezone`) or
    `every` (`"2m"`, `"1h30m"`, seconds), with these arguments. The schedule is named `name`,
    else the task's name. Bad values raise TaskError at declaration."""

    def register(task: HeavyTask) -> HeavyTask:
        if not isinstance(task, HeavyTask):
            raise TaskError("@periodic goes above @heavy_task (it schedules a heavy task)")
        label = name or task.name
        try:
            schedule = make_schedule(
                label, task.name, tuple(args), dict(kwargs or {}), cron, every, timezone, origin="task"
            )
        except ScheduleError as exc:
            hint = " (give @periodic a name=)" if name is None and exc.key == f"schedule {label}" else ""
            raise TaskError(f"@periodic on task {task.name}: {exc}{hint}") from None
        task.check_arguments(schedule.args, schedule.kwargs)
        known = _SCHEDULES.get(label)
        if known is not None and known.task != task.name:
            raise TaskError(f"schedule name {label!r} is declared twice: on tasks {known.task} and {task.name}")
        _SCHEDULES[label] = schedule
        return task

    return register


def declared_schedules() -> dict[str, Schedule]:
    """The schedules the task modules imported so far declare, by name."""
    return dict(_SCHEDULES)
