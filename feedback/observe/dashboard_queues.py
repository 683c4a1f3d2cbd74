"""The dashboard's queue panels: depth and age against each queue's water marks, the alarms,
and the jobs through the queues — throughput in blue, deferrals and failures in red.

The water marks are drawn from the config, as dashed lines on the panels they apply to, so the
lines on the dashboard are the ones the alarms use.
"""

from __future__ import annotations

import json

from easeoff.feedback.config import Config, QueueConfig, WaterMark
from easeoff.feedback.observe import metric_names as names
from easeoff.feedback.observe.grafana import BLUE, RATE, RED, Layout, state_timeline, target, timeseries
from easeoff.feedback.observe.watermarks import PHASES


def watermark_lines(queue: QueueConfig, measure: str) -> list[tuple[str, float]]:
    """A queue's water marks on one measure (depth or age), as the panel's threshold lines."""
    marks: list[WaterMark] = [m for m in queue.watermarks if m.measure == measure]
    lines = []
    for mark in marks:
        if mark.high is not None:
            lines.append(("high", mark.high))
        if mark.low is not None:
            lines.append(("low", mark.low))
    return lines


def queue_panels(layout: Layout, config: Config) -> None:
    """Each configured queue's depth and oldest age against its water marks; all queues' depth;
    the exporter's water-mark alarms."""
    layout.row("Queues")
    for queue in config.queues.values():
        selector = f"{{queue={json.dumps(queue.name)}}}"
        layout.add(
            timeseries(
                f"Depth: {queue.name}",
                [
                    target(f"{names.QUEUE_READY}{selector}", "ready"),
                    target(f"{names.QUEUE_DEFERRED}{selector}", "deferred"),
                    target(f"{names.QUEUE_RUNNING}{selector}", "running"),
                ],
                marks=watermark_lines(queue, "depth"),
                description="Ready jobs against the queue's depth water marks (dashed: low yellow, high red).",
            )
        )
        layout.add(
            timeseries(
                f"Oldest ready job age: {queue.name}",
                [target(f"{names.QUEUE_OLDEST_AGE}{selector}", "oldest ready job")],
                unit="s",
                marks=watermark_lines(queue, "age"),
                description="Seconds the oldest ready job has waited, against the queue's age water marks.",
            )
        )
    layout.add(
        timeseries(
            "Depth: all queues",
            [target(f"sum by (queue) ({names.QUEUE_READY})", "{{queue}}")],
            description="Every queue the exporter sees, configured or not.",
        )
    )
    layout.add(
        state_timeline(
            "Water-mark alarms (exporter)",
            [target(names.WATERMARK_ALERT, "{{queue}} {{measure}} {{mark}}")],
            [
                (i, phase, colour)
                for i, (phase, colour) in enumerate(zip(PHASES, ("green", "yellow", "red"), strict=True))
            ],
        )
    )


def throughput_panels(layout: Layout) -> None:
    """Jobs started and finished (blue), deferred and failed by reason (red)."""
    layout.row("Throughput, deferrals and failures")
    finished = names.jobs_counter("finished") + "_total"
    started = names.jobs_counter("started") + "_total"
    layout.add(
        timeseries(
            "Throughput",
            [
                target(f"sum by (queue) (rate({finished}[{RATE}]))", "finished {{queue}}"),
                target(f"sum by (queue) (rate({started}[{RATE}]))", "started {{queue}}"),
            ],
            unit="ops",
            color=BLUE,
            description="Jobs per second, by queue.",
        ),
        width=8,
    )
    layout.add(
        timeseries(
            "Deferrals by reason",
            [target(f"sum by (reason) (rate({names.jobs_counter('deferred')}_total[{RATE}]))", "{{reason}}")],
            unit="ops",
            color=RED,
            stack=True,
            description="Jobs put back for later per second, by the kind of strain (a deferral is not a failure).",
        ),
        width=8,
    )
    layout.add(
        timeseries(
            "Failures by reason",
            [
                target(f"sum by (reason) (rate({names.jobs_counter('failed')}_total[{RATE}]))", "failed {{reason}}"),
                target(f"sum by (reason) (rate({names.jobs_counter('expired')}_total[{RATE}]))", "expired {{reason}}"),
            ],
            unit="ops",
            color=RED,
            stack=True,
            description="Failed jobs by exception, and jobs expired past their deferral cap by last reason.",
        ),
        width=8,
    )
