"""What to run: heavy tasks, the resources they touch, and how apps enqueue them."""

from easeoff.tasks.chunking import Chunk, chunk_size
from easeoff.tasks.registry import HeavyTask, TaskError, UnknownTaskError, all_tasks, get_task, heavy_task

__all__ = ["Chunk", "HeavyTask", "TaskError", "UnknownTaskError", "all_tasks", "chunk_size", "get_task", "heavy_task"]
