"""A Grafana dashboard for the exporter's series, rendered from the config (`easeoff dashboard grafana`).

Rendered rather than shipped as a static file because the interesting lines are config:
each queue's water marks are drawn as dashed threshold lines on its depth and age panels,
each signal's high/low/critical on its panel. Colours carry meaning: throughput in blue,
deferrals and failures in red. Events — water-mark transitions, Prometheus' own alerts,
hosts going out or in, the gate holding or releasing a resource — are annotations.

The Prometheus data source is a dashboard variable, so the JSON imports anywhere. This module
assembles the rows; each topic's panels are a module beside it (dashboard_queues,
dashboard_strain, dashboard_budgets, dashboard_levers, dashboard_annotations), and grafana.py
holds the panel shapes they share.
"""

from __future__ import annotations

import json
from typing import Any

from easeoff.feedback.config import Config
from easeoff.feedback.observe.dashboard_annotations import annotation_queries
from easeoff.feedback.observe.dashboard_budgets import budget_panels
from easeoff.feedback.observe.dashboard_levers import contingency_panels, hosts_and_limits_panels
from easeoff.feedback.observe.dashboard_queues import queue_panels, throughput_panels
from easeoff.feedback.observe.dashboard_strain import strain_panels
from easeoff.feedback.observe.grafana import Layout


def grafana_dashboard(config: Config, title: str = "easeoff") -> dict[str, Any]:
    """The dashboard as JSON-able data: rows of panels by topic, the annotations, the data source variable."""
    layout = Layout()
    queue_panels(layout, config)
    throughput_panels(layout)
    strain_panels(layout, config)
    budget_panels(layout, config)
    contingency_panels(layout, config)
    hosts_and_limits_panels(layout)
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
    """The dashboard as the JSON text `easeoff dashboard grafana` prints."""
    return json.dumps(grafana_dashboard(config, title), indent=2) + "\n"
