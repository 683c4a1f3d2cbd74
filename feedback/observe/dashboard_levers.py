"""The dashboard's lever panels: what ops and the fleet pull to hold or pace work — switches,
throttles, rates, hosts taken out, cooling resources, concurrency limits — and the policies on
trial, which are judged and counted but hold nothing.

A switch left on is the commonest reason work stops unseen; its age is drawn against the stale
line EaseoffSwitchStale alerts on.
"""

from __future__ import annotations

from easeoff.feedback.config import Config
from easeoff.feedback.observe import metric_names as names
from easeoff.feedback.observe.grafana import RATE, Layout, state_timeline, target, timeseries


def contingency_panels(layout: Layout, config: Config) -> None:
    """Ops' switches, fleet-wide rates and the policies on trial (shadow verdicts)."""
    layout.row("Switches, rates and shadow verdicts")
    _switch_panels(layout, config)
    _rate_and_shadow_panels(layout)


def _switch_panels(layout: Layout, config: Config) -> None:
    """The switches in force, how long each has been on (against the stale line), and throttles."""
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


def _rate_and_shadow_panels(layout: Layout) -> None:
    """Fleet-wide rates and the jobs waiting on them; what the policies on trial would hold and defer."""
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


def hosts_and_limits_panels(layout: Layout) -> None:
    """Hosts out of production, cooling resources and their parked jobs, concurrency limits and
    leases, and the exporter's own health."""
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
