"""How every `easeoff` process logs: `--log-level` and `--log-format text|json`.

One handler on the root logger (rq's worker finds it and adds none of its own, so its records
come through it too); levels are set on the `easeoff` and `rq` loggers, not the root, so
`--log-level debug` shows easeoff's and rq's decisions without every library's chatter.
`json` writes one object a line — time, level, logger, message — for log shippers, and the
job's id, queue and task where the record knows them: from the record's `extra` (rq passes
`job_id` and `queue` on a failure), else from the job rq is running in this process.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from typing import Any, Literal

LogFormat = Literal["text", "json"]
LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
OUR_LOGGERS = ("easeoff", "rq")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # rq colours queue names on a terminal: no place in JSON
_JOB_FIELDS = ("job_id", "queue", "task", "reason", "worker")  # `extra` keys a record may carry


class JSONFormatter(logging.Formatter):
    """One JSON object a line: `time` (UTC, ISO 8601), `level`, `logger`, `message`, the job's
    fields where known, and `exc` with the traceback of a logged exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _ANSI.sub("", record.getMessage()),
        }
        entry.update(job_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def job_fields(record: logging.LogRecord) -> dict[str, str]:
    """The job a record is about: what the caller passed in `extra`, else the job this process runs."""
    fields = {name: str(getattr(record, name)) for name in _JOB_FIELDS if getattr(record, name, None) is not None}
    if "job_id" in fields:
        return fields
    from rq.job import get_current_job  # a work horse, or an in-process worker, running a job

    job = get_current_job()
    if job is None:
        return fields
    from easeoff.tasks.meta import task_name

    try:
        task = task_name(job)
    except Exception:  # a job whose data cannot be read still gets its id
        task = None
    found = {"job_id": job.id, "queue": job.origin, "task": task}
    return {**{k: v for k, v in found.items() if v}, **fields}


def configure(level: str | None, log_format: LogFormat) -> None:
    """Apply `--log-level` (None: leave each command its default) and `--log-format` to the root
    handler that `main` installed."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING, format=TEXT_FORMAT)
    formatter = JSONFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    for handler in root.handlers:
        handler.setFormatter(formatter)
    if level is not None:
        for name in OUR_LOGGERS:
            logging.getLogger(name).setLevel(level.upper())
