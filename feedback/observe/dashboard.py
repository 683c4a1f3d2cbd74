"""A Grafana dashboard for the exporter's series, rendered from the config (`easeoff dashboard grafana`).

Rendered rather than shipped as a static file because the interesting lines are config:
each queue's water marks are drawn as dashed threshold lines on its depth and age panels,
each signal's high/low/critical on its panel. Colours carry meaning: throughput in blue,
deferrals and failures in red. Events — water-mark transitions, Prometheus' own alerts,
hosts going out or in, the gate holding or releasing a resource — are annotations.

The Prometheus data source is a dashboard variable, so the JSON imports anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from easeoff.feedback.config import Config, QueueConfig, WaterMark
from easeoff.feedback.observe import metric_names as names
from easeoff.feedback.observe.watermarks import PHASES

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
BLUE = {"mode": "shades", "fixedColor": "blue"}
RED = {"mode": "shades", "fixedColor": "red"}
MARK_COLOURS = {"low": "yellow", "high": "red", "critical": "purple"}


class Layout(msgspec.Struct):
    """Places panels left to right on Grafana's 24-column grid, wrapping to a new line."""

    panels: list[dict[str, Any]] = msgspec.field(default_factory=list)
    x: int = 0
    y: int = 0
    line_height: int = 0

    def add(self, panel: dict[str, Any], width: int = 12, height: int = 8) -> None:
        if self.x + width > 24:
            self.newline()
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": width, "h": height}
        self.panels.append(panel)
        self.x += width
        self.line_height = max(self.line_height, height)

    def row(self, title: str) -> None:
        self.newline()
        self.add({"type": "row", "title": title, "collapsed": False, "panels": []}, width=24, height=1)
        self.newline()

    def newline(self) -> None:
        if self.x:
            self.y += self.line_height
        self.x, self.line_height = 0, 0


def target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


def thresholds(marks: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """Grafana threshold steps from (name, value) pairs, lowest first; drawn as dashed lines."""
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    for name, value in sorted(marks, key=lambda m: m[1]):
        steps.append({"color": MARK_COLOURS[name], "value": value})
    return {"mode": "absolute", "steps": steps}


def timeseries(
    title: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    marks: Sequence[tuple[str, float]] = (),
    color: dict[str, Any] | None = None,
    description: str = "",
    stack: bool = False,
    minimum: float | None = 0,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "thresholdsStyle": {"mode": "dashed" if marks else "off"},
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    defaults: dict[str, Any] = {"unit": unit, "custom": custom, "thresholds": thresholds(marks)}
    if minimum is not None:
        defaults["min"] = minimum
    if color is not None:
        defaults["color"] = color
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
    }


def state_timeline(title: str, targets: list[dict[str, Any]], states: Sequence[tuple[int, str, str]]) -> dict[str, Any]:
    """A state timeline with value mappings: (value, text, colour)."""
    mappings = [{"type": "value", "options": {str(v): {"text": text, "color": colour} for v, text, colour in states}}]
    return {
        "type": "state-timeline",
        "title": title,
        "datasource": DATASOURCE,
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": {"mappings": mappings, "color": {"mode": "thresholds"}}, "overrides": []},
        "options": {"showValue": "never", "mergeValues": True},
    }


def table(title: str, targets: list[dict[str, Any]], description: str = "") -> dict[str, Any]:
    """A table of instant queries, one row per series: for labels that carry the news (a reason)."""
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [
            {**t, "refId": chr(ord("A") + i), "instant": True, "range": False, "format": "table"}
            for i, t in enumerate(targets)
        ],
        "transformations": [{"id": "merge", "options": {}}],
        "options": {"showHeader": True},
    }


def watermark_lines(queue: QueueConfig, measure: str) -> list[tuple[str, float]]:
    marks: list[WaterMark] = [m for m in queue.watermarks if m.measure == measure]
    lines = []
    for mark in marks:
        if mark.high is not None:
            lines.append(("high", mark.high))
        if mark.low is not None:
            lines.append(("low", mark.low))
    return lines


def queue_panels(layout: Layout, config: Config) -> None:
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


def strain_panels(layout: Layout, config: Config) -> None:
    layout.row("Strain signals and the gate")
    lag = config.signals.get("lag")
    lag_marks: list[tuple[str, float]] = []
    if lag is not None:
        lag_marks = [("low", lag.low), ("high", lag.high)]
        lag_marks += [("critical", lag.critical)] if lag.critical is not None else []
    layout.add(
        timeseries(
            "Replica lag",
            [target(f'{names.SIGNAL_VALUE}{{signal="lag"}}', "{{host}}")],
            unit="s",
            marks=lag_marks,
            description="Seconds each replica (or pair half) is behind, from the heartbeat row where there is one.",
        ),
        width=8,
    )
    for signal in config.signals.values():
        if signal.name == "lag":
            continue  # drawn above, in seconds
        marks = [("low", signal.low), ("high", signal.high)]
        if signal.critical is not None:
            marks.append(("critical", signal.critical))
        layout.add(
            timeseries(
                f"Signal: {signal.name}",
                [target(f"{names.SIGNAL_VALUE}{{signal={json.dumps(signal.name)}}}", "{{host}}")],
                marks=marks,
                description=(
                    "Strained above high, healthy again below low; above critical, resumable jobs stop. "
                    f"Per-resource overrides are in {names.SIGNAL_THRESHOLD}."
                ),
            ),
            width=8,
        )
    layout.add(
        state_timeline(
            "Gate: resources held",
            [
                target(names.RESOURCE_HELD, "{{resource}}"),
                target(names.GLOBAL_HELD, "global traffic"),
            ],
            [(0, "admit", "green"), (1, "held", "red")],
        ),
        width=12,
    )
    layout.add(
        timeseries(
            "Hold reasons",
            [target(f"sum by (reason) ({names.RESOURCE_HOLD_REASONS})", "{{reason}}")],
            color=RED,
            stack=True,
            description="Findings holding resources, by kind.",
        ),
        width=12,
    )


def budget_panels(layout: Layout, config: Config) -> None:
    """Per budgeted resource: each ceiling against what the controller observed (and, for a
    latency, the learned baseline); the limit and pace it chose, the slack; its last reasons."""
    budgeted = {name: r.budget for name, r in config.resources.items() if r.budget is not None}
    if not budgeted:
        return
    layout.row("Budgets")
    for name, budget in budgeted.items():
        resource = f"resource={json.dumps(name)}"
        ceilings = [
            ("latency", "s", budget.latency is not None or budget.latency_multiple is not None),
            ("lag", "s", budget.lag is not None),
            ("history_list_length", "short", budget.history_list_length is not None),
        ]
        for ceiling, unit, present in ceilings:
            if not present:
                continue
            selector = f"{{{resource}, ceiling={json.dumps(ceiling)}}}"
            targets = [
                target(f"{names.BUDGET_CEILING}{selector}", "budget"),
                target(f"{names.BUDGET_OBSERVED}{selector}", "observed"),
            ]
            if ceiling == "latency":
                targets.append(target(f"{names.BUDGET_BASELINE}{{{resource}}}", "idle baseline"))
            layout.add(
                timeseries(
                    f"Budget {ceiling}: {name}",
                    targets,
                    unit=unit,
                    description="The most the budget allows (absolute), what the controller saw at each step"
                    + (", and the latency learned while no heavy work ran." if ceiling == "latency" else "."),
                ),
                width=8,
            )
        layout.add(
            timeseries(
                f"Budget limit: {name}",
                [
                    target(f"{names.CONCURRENCY_LIMIT}{{{resource}}}", "limit"),
                    target(f"{names.CONCURRENCY_LEASES}{{{resource}}}", "in use"),
                    target(f"{names.BUDGET_LEVEL}{{{resource}}}", "level"),
                ],
                description="The concurrency the controller chose (0 while it learns a baseline), and the jobs in it.",
            ),
            width=8,
        )
        layout.add(
            timeseries(
                f"Budget slack and pace: {name}",
                [
                    target(f"{names.BUDGET_SLACK}{{{resource}}}", "slack"),
                    target(f"{names.BUDGET_DUTY}{{{resource}}}", "pace (duty cycle)"),
                ],
                unit="percentunit",
                marks=[("high", 0.0)],
                minimum=None,
                description="Slack: 1 - observed/budget of the tightest ceiling (below 0: a breach, cut at once). "
                "Pace: the share of time one job may run below one job at a time (1: full pace).",
            ),
            width=8,
        )
    layout.add(
        table(
            "Budget: last decisions",
            [
                target(f"{names.BUDGET_DECISION} == 1", "{{resource}} {{why}}"),
                target(names.BUDGET_STEP_AGE, "{{resource}}"),
            ],
            description="Why each controller holds, grows or cuts (`easeoff log` and the page have the numbers), "
            "and seconds since it last stepped.",
        ),
        width=12,
    )
    layout.add(
        timeseries(
            "Budget decisions by reason",
            [target(f"sum by (why) ({names.BUDGET_DECISION})", "{{why}}")],
            stack=True,
            description="How many budgets are in each state (learning, grow, cut_breach, hold_*).",
        ),
        width=12,
    )


def contingency_panels(layout: Layout, config: Config) -> None:
    """Ops' switches, fleet-wide rates and the policies on trial (shadow verdicts)."""
    layout.row("Switches, rates and shadow verdicts")
    layout.add(
        state_timeline(
            "Switches in force",
            [target(names.SWITCH_ACTIVE, "{{kind}} {{scope}}")],
            [(0, "off", "green"), (1, "on", "orange")],
        ),
        width=12,
    )
    layout.add(
        timeseries(
            "Switch age",
            [target(names.SWITCH_AGE, "{{kind}} {{scope}}")],
            unit="s",
            marks=[("high", config.switch_stale_after)],
            description="How long each switch has been on; past the dashed line EaseoffSwitchStale fires.",
        ),
        width=6,
    )
    layout.add(
        timeseries(
            "Throttles",
            [target(names.SWITCH_THROTTLE_RATIO, "{{task}}")],
            unit="percentunit",
            description="The share of each task's jobs a throttle refuses.",
        ),
        width=6,
    )
    layout.add(
        timeseries(
            "Rates",
            [
                target(names.RATE_LIMIT, "starts/s allowed {{scope}}"),
                target(names.RATE_WAITING, "waiting {{scope}}"),
            ],
            description="Each rated resource's fleet-wide starts a second, and the jobs deferred to a reserved start.",
        ),
        width=8,
    )
    layout.add(
        state_timeline(
            "Shadow verdicts",
            [target(names.SHADOW_HOLDING, "{{resource}}")],
            [(0, "would admit", "green"), (1, "would hold", "orange")],
        ),
        width=8,
    )
    layout.add(
        timeseries(
            "Shadow deferrals",
            [
                target(
                    f"sum by (resource, signal) (rate({names.SHADOW_DEFERRALS}_total[{RATE}]))",
                    "{{resource}} {{signal}}",
                ),
                target(names.SHADOW_DEFERRALS_HOUR, "last hour {{resource}} {{signal}}"),
            ],
            description="Jobs the policies on trial would have deferred that the gate admitted (a second; last hour).",
        ),
        width=8,
    )


def switch_panels(layout: Layout) -> None:
    layout.row("Hosts, limits and the exporter")
    layout.add(
        state_timeline(
            "Hosts out of production", [target(names.HOST_OUT, "{{host}}")], [(0, "in", "green"), (1, "out", "red")]
        ),
        width=8,
    )
    layout.add(
        timeseries(
            "Cooling resources and parked jobs",
            [
                target(names.RESOURCE_PARKED, "parked {{resource}}"),
                target(names.RESOURCE_COOLING, "cooling {{resource}}"),
            ],
        ),
        width=8,
    )
    layout.add(
        timeseries(
            "Concurrency: limit and leases",
            [
                target(names.CONCURRENCY_LIMIT, "limit {{resource}}"),
                target(names.CONCURRENCY_LEASES, "in use {{resource}}"),
            ],
        ),
        width=8,
    )
    layout.add(
        timeseries(
            "Exporter",
            [
                target(names.REDIS_UP, "Redis readable"),
                target(names.WORKERS, "workers"),
                target(names.SCRAPE_DURATION, "scrape seconds"),
            ],
        ),
        width=24,
    )


def annotation(name: str, expr: str, colour: str, title: str, text: str, tags: str) -> dict[str, Any]:
    """A Prometheus annotation query. Grafana merges consecutive steps into one region, so a
    `changes(x[2m]) > 0` at a 1m step marks each change once."""
    return {
        "name": name,
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": colour,
        "expr": expr,
        "step": "1m",
        "titleFormat": title,
        "textFormat": text,
        "tagKeys": tags,
        "useValueForTime": False,
    }


def annotation_queries() -> list[dict[str, Any]]:
    transitions = names.WATERMARK_TRANSITIONS + "_total"
    return [
        {
            "name": "Annotations & Alerts",
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "type": "dashboard",
        },
        annotation(
            "Water-mark transitions",
            f"changes({transitions}[2m]) > 0",
            "orange",
            "{{queue}}: {{measure}} {{mark}} water mark",
            "entered {{state}}",
            "queue,measure,mark,state",
        ),
        annotation(
            "Water-mark alerts (Prometheus)",
            'ALERTS{alertname=~"EaseoffQueue.+", alertstate="firing"}',
            "red",
            "{{alertname}} {{queue}}",
            "firing",
            "alertname,queue",
        ),
        annotation(
            "Hosts out / in",
            f"changes({names.HOST_OUT}[2m]) > 0",
            "purple",
            "host {{host}} taken out or put back",
            "easeoff host out/in",
            "host",
        ),
        annotation(
            "Gate holds / releases",
            f"changes({names.RESOURCE_HELD}[2m]) > 0",
            "yellow",
            "{{resource}}: gate verdict changed",
            "held or released",
            "resource",
        ),
        annotation(
            "Budget decisions",
            f"changes({names.BUDGET_DECISION}[2m]) > 0 and {names.BUDGET_DECISION} == 1",
            "green",
            "{{resource}}: budget controller now {{why}}",
            "see `easeoff log` or the page for its numbers",
            "resource,why",
        ),
        annotation(
            "Switches and annotations",
            f'changes({names.EVENTS}_total{{kind=~"switch|annotation"}}[2m]) > 0',
            "blue",
            "{{kind}} logged",
            "see `easeoff log` or the exporter's /api/events for who, when and why",
            "kind",
        ),
    ]


def grafana_dashboard(config: Config, title: str = "easeoff") -> dict[str, Any]:
    layout = Layout()
    queue_panels(layout, config)
    throughput_panels(layout)
    strain_panels(layout, config)
    budget_panels(layout, config)
    contingency_panels(layout, config)
    switch_panels(layout)
    return {
        "title": title,
        "uid": "easeoff",
        "tags": ["easeoff"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": annotation_queries()},
        "panels": layout.panels,
    }


def render_dashboard(config: Config, title: str = "easeoff") -> str:
    return json.dumps(grafana_dashboard(config, title), indent=2) + "\n"
