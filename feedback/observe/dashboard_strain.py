"""The dashboard's strain panels: the signals the probes read, against the thresholds the gate
applies, and the resources the gate holds with its reasons.

Each signal's high, low and critical come from the config and are drawn as dashed lines, so a
panel shows how near the gate is to holding work, not just the number.
"""

from __future__ import annotations

import json

from easeoff.feedback.config import Config
from easeoff.feedback.observe import metric_names as names
from easeoff.feedback.observe.grafana import RED, Layout, state_timeline, target, timeseries


def strain_panels(layout: Layout, config: Config) -> None:
    """Replica lag, each signal against its thresholds, and what the gate holds and why."""
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
