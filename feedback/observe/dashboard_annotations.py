"""The dashboard's annotations: events drawn across every panel — water-mark transitions,
Prometheus' own alerts, hosts going out or in, the gate holding or releasing a resource, budget
decisions, switches and operators' notes.

A bend in a graph is read against what happened then; annotations put the two on one time axis,
each a Prometheus query over a counter or state easeoff exports (no separate event store).
"""

from __future__ import annotations

from typing import Any

from easeoff.feedback.observe import metric_names as names
from easeoff.feedback.observe.grafana import DATASOURCE


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
    """Grafana's own annotations (hidden), then easeoff's events: the queues' water marks, then the fleet's."""
    built_in = {
        "name": "Annotations & Alerts",
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "type": "dashboard",
    }
    return [built_in, *_queue_annotations(), *_fleet_annotations()]


def _queue_annotations() -> list[dict[str, Any]]:
    """Water-mark transitions as the exporter saw them, and the alerts Prometheus fired on them."""
    transitions = names.WATERMARK_TRANSITIONS + "_total"
    return [
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
    ]


def _fleet_annotations() -> list[dict[str, Any]]:
    """Hosts out and in, the gate holding or releasing, budget decisions, switches and notes."""
    return [
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
