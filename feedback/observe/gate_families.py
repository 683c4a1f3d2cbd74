"""The metric families of what the probes read and the gate decides: each target's signals
against their thresholds, the gate's holds and reasons per resource, and — apart from them —
the policies on trial (shadow verdicts), which are judged and counted but hold nothing.

Pure, as every *_families module: the exporter reads Redis once per scrape and hands the
snapshot here. Every configured resource is exported even when healthy (0, not absent).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from easeoff.feedback.config import Config
from easeoff.feedback.observe import metric_names as names
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.tally.shadow_tally import ShadowCount
from easeoff.feedback.tally.unknown_resources import UnknownResource
from easeoff.feedback.verdict.gate import global_findings, resource_findings
from easeoff.feedback.verdict.shadow import ShadowJudge


def signal_families(config: Config, snapshot: Snapshot, now: float) -> list[Metric]:
    """Each probe target's signal values, thresholds and hysteresis state, and the reading's health."""
    value = GaugeMetricFamily(
        names.SIGNAL_VALUE,
        "The latest reading of a strain signal (host is a MySQL host, or app:/prometheus: for traffic).",
        labels=["host", "signal"],
    )
    threshold = GaugeMetricFamily(
        names.SIGNAL_THRESHOLD,
        "A signal's threshold for this host: strained above high, healthy below low, jobs stop above critical.",
        labels=["host", "signal", "level"],
    )
    strained = GaugeMetricFamily(
        names.SIGNAL_STRAINED,
        "1 while the signal is strained on this host (with hysteresis).",
        labels=["host", "signal"],
    )
    age = GaugeMetricFamily(names.READING_AGE, "Seconds since the target was last probed.", labels=["host"])
    ok = GaugeMetricFamily(
        names.PROBE_OK, "1 if the latest probe of the target succeeded, 0 if it failed or never ran.", labels=["host"]
    )
    for target in config.probe_targets:
        reading = snapshot.get(target)
        ok.add_metric([target], 1 if reading is not None and reading.error is None else 0)
        if reading is None:
            continue
        age.add_metric([target], max(0.0, now - reading.taken_at))
        for name, number in reading.values.items():
            value.add_metric([target, name], number)
            strained.add_metric([target, name], 1 if reading.strained.get(name) else 0)
        for signal in config.signals.values():
            if signal.name not in reading.values:
                continue
            limits = config.thresholds(signal.name, target)
            for level, limit in (("high", limits.high), ("low", limits.low), ("critical", limits.critical)):
                if limit is not None:
                    threshold.add_metric([target, signal.name, level], limit)
    return [value, threshold, strained, age, ok]


def verdict_families(
    config: Config, snapshot: Snapshot, now: float, unknown: Sequence[UnknownResource] = ()
) -> list[Metric]:
    """What the gate decides now, per resource and globally, with its reasons counted by kind.
    A resource jobs named that the config does not declare shows as held for `unknown_resource`."""
    global_reasons, _ = global_findings(snapshot, config, now)
    held = GaugeMetricFamily(
        names.RESOURCE_HELD,
        "1 while the gate holds work on the resource (its own strain or global traffic), 0 while it admits.",
        labels=["resource"],
    )
    reasons = GaugeMetricFamily(
        names.RESOURCE_HOLD_REASONS,
        "Findings holding the resource, by kind (the signal, probe_error, host_out, ...); global traffic aside.",
        labels=["resource", "reason"],
    )
    critical = GaugeMetricFamily(
        names.RESOURCE_CRITICAL,
        "Signals above their critical mark on the resource: running resumable jobs stop at their next checkpoint.",
        labels=["resource"],
    )
    for name, resource in config.resources.items():
        found = resource_findings(resource, snapshot, config, now)
        held.add_metric([name], 1 if found.reasons or global_reasons else 0)
        for kind, count in sorted(Counter(r.label for r in found.reasons).items()):
            reasons.add_metric([name, kind], count)
        critical.add_metric([name], len(found.critical))
    for missing in unknown:
        held.add_metric([missing.name], 1)
        reasons.add_metric([missing.name, "unknown_resource"], 1)
        critical.add_metric([missing.name], 0)
    global_held = GaugeMetricFamily(
        names.GLOBAL_HELD,
        "1 while global traffic signals hold every queue.",
        value=1 if global_reasons else 0,
    )
    return [held, reasons, critical, global_held]


def shadow_families(config: Config, snapshot: Snapshot, now: float, counts: Sequence[ShadowCount]) -> list[Metric]:
    """Shadow verdicts, apart from the real ones: the signals on trial, whether they would hold each
    resource now, and the jobs they would have deferred (ever, and in the last hour)."""
    on_trial = GaugeMetricFamily(
        names.SHADOW_SIGNAL, "1 for each signal in shadow mode: judged and counted, holding nothing.", labels=["signal"]
    )
    for signal in config.signals.values():
        if signal.shadow:
            on_trial.add_metric([signal.name], 1)
    holding = GaugeMetricFamily(
        names.SHADOW_HOLDING,
        "1 while the policies on trial (shadow signals, shadow thresholds) would hold the resource beyond the gate.",
        labels=["resource"],
    )
    judge = ShadowJudge()
    for name in config.resources:
        holding.add_metric([name], 1 if judge.holds(name, snapshot, config, now) else 0)
    total = CounterMetricFamily(
        names.SHADOW_DEFERRALS,
        "Jobs the policies on trial would have deferred (the real gate admitted them), by resource and signal.",
        labels=["resource", "signal"],
    )
    last_hour = GaugeMetricFamily(
        names.SHADOW_DEFERRALS_HOUR,
        "Jobs the policies on trial would have deferred in the last hour.",
        labels=["resource", "signal"],
    )
    for count in counts:
        total.add_metric([count.resource, count.signal], count.total)
        last_hour.add_metric([count.resource, count.signal], count.last_hour)
    return [on_trial, holding, total, last_hour]
