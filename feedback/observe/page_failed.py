"""The page's failed jobs: how many each queue holds, and the newest few with their reasons.

Only the newest are read (page_state.FAILED_SHOWN), so the page costs the same with ten failed
jobs or a million; the commands that list and requeue them all are named beside the table.
"""

from __future__ import annotations

from easeoff.feedback.observe.markup import El, el
from easeoff.feedback.observe.page_parts import clock, empty, head, section
from easeoff.feedback.observe.page_state import PageState


def failed_section(state: PageState) -> El:
    """The failed-job counts per queue, and a table of the newest with their reasons."""
    failed = state.failed
    if not failed.jobs:
        return section("failed-jobs", "Failed jobs", empty("no failed jobs"))
    per_queue = ", ".join(f"{q} {n}" for q, n in failed.counts if n)
    meta = el(
        "p",
        {"class": "meta"},
        f"{failed.total} failed ({per_queue}); the newest {len(failed.jobs)} below. ",
        el("code", None, "easeoff failed"),
        " lists them, ",
        el("code", None, "easeoff requeue"),
        " puts them back.",
    )
    rows = [
        el(
            "tr",
            {"data-job": j.id},
            el("td", None, "" if j.failed_at is None else clock(j.failed_at, date=True)),
            el("td", {"class": "text"}, j.queue),
            el("td", {"class": "text"}, j.task),
            el("td", {"class": "text"}, el("code", None, j.id)),
            el("td", {"class": "text reason"}, j.reason),
        )
        for j in failed.jobs
    ]
    table = el("table", {"id": "failed-table"}, head("failed at", "queue", "task", "job", "reason"), rows)
    return section("failed-jobs", "Failed jobs", meta, table)
