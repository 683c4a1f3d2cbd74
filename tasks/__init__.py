"""What to run: heavy tasks, the resources they touch, and how apps enqueue them."""

from easeoff.tasks.registry import HeavyTask, TaskError, UnknownTaskError, all_tasks, get_task, heavy_task

__all__ = ["HeavyTask", "TaskError", "UnknownTaskError", "all_tasks", "get_task", "heavy_task"]
