"""Grafana's dashboard JSON, in the few shapes easeoff's dashboard uses: a layout on the grid,
queries, time series, state timelines, tables and threshold lines.

Written by hand rather than through a client library: the dashboard is a small JSON document,
and keeping its shapes here lets each topic's panels (the dashboard_* modules) say only what
they draw. The Prometheus data source is a dashboard variable, so the JSON imports anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

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
    """One PromQL query of a panel; the panel renumbers its refIds."""
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
    """A time-series panel; marks, if any, are drawn as dashed threshold lines."""
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
