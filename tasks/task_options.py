"""The options of `@heavy_task` that take checking, checked once at declaration: a rate, a
weight, the errors to retry and how often, a resumable task's chunk time. A bad one is a
one-line ValueError naming it (TaskError to the app: tasks/registry.py)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from easeoff.feedback.levers.lever import LeverError, task_options
from easeoff.feedback.rate import parse_rate
from easeoff.tasks.chunking import DEFAULT_CHUNK_TIME, parse_chunk_time
from easeoff.tasks.retry_on import RetryOn, checked_retries, checked_retry_on


class CheckedOptions(NamedTuple):
    rate: str | None
    weight: float
    retry_on: tuple[RetryOn, ...]
    retries: int
    chunk_time: float
    lever_options: dict[str, Any]  # those of lever modules (feedback/levers/), as their types took them


def checked_options(
    rate: str | None,
    weight: float,
    retry_on: Iterable[RetryOn],
    retries: int,
    chunk_time: float | str | None,
    resumable: bool,
    lever_options: Mapping[str, Any],
) -> CheckedOptions:
    """The options that take checking, in their canonical form; a one-line ValueError otherwise."""
    if rate is not None:
        try:
            rate = str(parse_rate(rate))
        except ValueError as exc:
            raise ValueError(f"heavy_task rate: {exc}") from None
    checked_weight = _checked_weight(weight)
    try:
        retried_for, retries = checked_retry_on(retry_on), checked_retries(retries)
    except ValueError as exc:
        raise ValueError(f"heavy_task {exc}") from None
    if chunk_time is not None and not resumable:
        raise ValueError("heavy_task chunk_time: only a resumable task has chunks to size (add resumable=True)")
    try:
        chunk_seconds = DEFAULT_CHUNK_TIME if chunk_time is None else parse_chunk_time(chunk_time)
    except ValueError as exc:
        raise ValueError(f"heavy_task {exc}") from None
    try:
        levers_take = task_options(lever_options)
    except LeverError as exc:
        raise ValueError(f"heavy_task {exc}") from None
    return CheckedOptions(rate, checked_weight, retried_for, retries, chunk_seconds, levers_take)


def _checked_weight(weight: object) -> float:
    """A finite number above zero: a share of nothing, or of everything, is not a share."""
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"heavy_task weight={weight!r}: must be a positive number, like 1 or 3")
    return float(weight)
