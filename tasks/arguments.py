"""A task's arguments as rq sees them: one of rq's job options passed as an argument (an rq
habit: `.delay(depends_on=...)`) is pointed to `options()`, and the arguments are described
for rq's job description, as rq itself describes a call."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any


def job_options_among(kwargs: Mapping[str, Any], parameters: Mapping[str, inspect.Parameter]) -> str | None:
    """The first keyword that is one of rq's job options and not the task's parameter, if any."""
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for name in kwargs:
        if name in RQ_JOB_OPTIONS and name not in parameters and not takes_any:
            return name
    return None


# rq 3.0's enqueue options: given to `.delay()` by an rq habit, they get a pointer to `options()`.
RQ_JOB_OPTIONS = frozenset(
    {
        *("depends_on", "retry", "on_success", "on_failure", "on_stopped", "result_ttl", "failure_ttl", "ttl"),
        *("at_front", "job_timeout", "unique", "meta", "description", "timeout", "repeat", "rate_limit"),
        *("webhooks", "pipeline"),
    }
)


def describe_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    parts = [json.dumps(a) for a in args] + [f"{k}={json.dumps(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)
