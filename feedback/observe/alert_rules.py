"""Prometheus alerting rules rendered from the queues' water marks (`easeoff alerts rules`).

The rules come from the same `Alarm`s the exporter evaluates (feedback/observe/watermarks.py),
so Prometheus and the exporter's state gauge fire on the same condition. Hysteresis goes
through the ALERTS deadband: a high alarm's expression is

    x > HIGH or (x > LOW and on(queue) ALERTS{alertname="...", alertstate="firing", queue="..."})

so a firing alert holds while x stays above LOW and resolves only below it; `for` and
`keep_firing_for` (Prometheus >= 2.42) come from the water mark. One rule per queue and
mark, because each queue has its own thresholds; the alertname is shared per measure and
mark (`EaseoffQueueDepthHigh`), so routing and silences work across queues.

YAML is written by hand rather than with PyYAML: the document is a fixed shape of maps,
lists and strings, every string is emitted quoted (single-quoted, JSON-escaped if it holds
control characters), and `promtool check rules` in the tests is the judge — not worth a dependency.
"""

from __future__ import annotations

import json
import math
from typing import Any

from easeoff.feedback.config import Config
from easeoff.feedback.observe import metric_names as names
from easeoff.feedback.observe.watermarks import Alarm, config_alarms

# Annotations name the queue through its label, never by pasting the name into the template:
# a queue name holding `{{` would otherwise break (or inject into) Prometheus' Go templates.
QUEUE_LABEL = "{{ $labels.queue }}"
WATERMARK_GROUP = "easeoff-watermarks"
EXPORTER_GROUP = "easeoff-exporter"
SWITCH_GROUP = "easeoff-switches"
BUDGET_GROUP = "easeoff-budgets"
BUDGET_BREACH_FOR = 300.0  # seconds: the controller cuts within an interval; a breach that outlasts this is news
BUDGET_BREACHED_RUNBOOK = (
    "The live site has been over its budget for minutes although the controller cuts heavy work at once. "
    "Run `easeoff status` (LIMITED) or open the page's Budgets: if the reason is cannot_meet (breached at the "
    "floor), the heavy work is not what slows the site (a deploy, the live load, a host): look there, or pause the "
    "resource's queues "
    "to be sure (`easeoff pause`). If the ceiling is a multiple of a baseline learned in a quiet hour, it may be "
    "too tight for the day's load: state it as a time instead."
)
SWITCH_STALE_RUNBOOK = (
    "A contingency switch has been on longer than [switches] stale_after. Run `easeoff switches --stale`: "
    "each names who set it and why. Ask them; then turn it off (`easeoff resume`, `easeoff unthrottle`, "
    "`easeoff threshold SIGNAL --clear`), or, if it must stay, set it again with a --ttl so it lapses by itself."
)

RUNBOOKS = {
    ("depth", "high"): (
        "Run `easeoff status`. If the queue is held, its resources are strained and the backlog is the gate "
        "easing off: read the reasons and relieve the database (or mark a host out). If it is not held, "
        "workers are missing or too few: check easeoff_workers and start more `easeoff worker {queue}`."
    ),
    ("depth", "low"): (
        "The queue is running dry: check that the producers still enqueue (`easeoff status`, the app's logs). "
        "If an empty queue is normal here, remove its low water mark from the config."
    ),
    ("age", "high"): (
        "Jobs wait too long. Run `easeoff status`: a held queue names the strained resources; jobs deferred "
        "again and again show in easeoff_jobs_deferred_total by reason; otherwise add workers for {queue}."
    ),
    ("age", "low"): (
        "The oldest ready job is younger than the low mark: the queue is drained as fast as it fills. "
        "If that is expected, remove the age low mark from the config."
    ),
}


def duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds as `120s`, otherwise milliseconds (`1500ms`)."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def number(value: float) -> str:
    """A PromQL number literal: `10000`, not `10000.0`."""
    if not math.isfinite(value):
        raise ValueError(f"water marks must be finite, not {value}")
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def promql_string(text: str) -> str:
    """A PromQL string literal (Go-style escapes, like JSON's for what queue names hold)."""
    return json.dumps(text)


def template_literal(text: str) -> str:
    """`text` as a Prometheus label/annotation template that prints exactly `text`: as is, unless
    it holds `{{`, then as a Go string literal in an action (JSON escapes are Go escapes)."""
    return text if "{{" not in text else "{{ " + json.dumps(text, ensure_ascii=False) + " }}"


def alarm_expr(alarm: Alarm) -> str:
    series = f"{names.MEASURE_METRICS[alarm.measure]}{{queue={promql_string(alarm.queue)}}}"
    op = ">" if alarm.mark == "high" else "<"
    fire = f"{series} {op} {number(alarm.trigger)}"
    if alarm.release == alarm.trigger:
        return fire
    firing = (
        f'ALERTS{{alertname={promql_string(alarm.alertname)}, alertstate="firing", queue={promql_string(alarm.queue)}}}'
    )
    return f"{fire} or ({series} {op} {number(alarm.release)} and on(queue) {firing})"


def alarm_rule(alarm: Alarm, runbook_url: str | None = None) -> dict[str, Any]:
    above = alarm.mark == "high"
    what = "ready jobs" if alarm.measure == "depth" else "seconds for its oldest ready job"
    band = (
        f" (resolves {'below' if above else 'above'} {number(alarm.release)})" if alarm.release != alarm.trigger else ""
    )
    unit = " jobs" if alarm.measure == "depth" else "s"
    annotations = {
        "summary": (
            f"Queue {QUEUE_LABEL}: {alarm.measure} {'above' if above else 'below'} its "
            f"{alarm.mark}-water mark of {number(alarm.trigger)}{unit}"
        ),
        "description": (
            f"Queue {QUEUE_LABEL} has {{{{ $value }}}} {what}, "
            f"{'above' if above else 'below'} its {alarm.mark}-water mark of {number(alarm.trigger)}{band}."
        ),
        "runbook": RUNBOOKS[(alarm.measure, alarm.mark)].format(queue=QUEUE_LABEL),
    }
    if runbook_url:
        annotations["runbook_url"] = runbook_url
    rule: dict[str, Any] = {"alert": alarm.alertname, "expr": alarm_expr(alarm), "for": duration(alarm.for_s)}
    if alarm.keep_firing_for_s > 0:
        rule["keep_firing_for"] = duration(alarm.keep_firing_for_s)
    # The queue label keeps one queue's rule apart from another's (promtool lints same-name,
    # same-label rules as duplicates); rule labels are Go templates, hence the literal.
    labels = {"severity": "warning", "queue": template_literal(alarm.queue)}
    rule["labels"] = {**labels, "measure": alarm.measure, "mark": alarm.mark}
    rule["annotations"] = annotations
    return rule


def exporter_rules(runbook_url: str | None = None) -> list[dict[str, Any]]:
    """Without these, an exporter that stops reading Redis (or stops answering) would make every
    water-mark alert resolve silently: no series, no alert."""
    rules: list[dict[str, Any]] = [
        {
            "alert": "EaseoffRedisUnreadable",
            "expr": f"{names.REDIS_UP} == 0",
            "for": "1m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "The easeoff exporter cannot read Redis",
                "description": "Queues, water marks and verdicts are not exported; workers use the same Redis.",
                "runbook": "Check Redis (redis-cli -u <redis.url> ping) and the exporter's log for the error.",
            },
        },
        {
            "alert": "EaseoffExporterAbsent",
            "expr": f"absent({names.REDIS_UP})",
            "for": "5m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "No easeoff exporter is being scraped",
                "description": "Water-mark alerts cannot fire while the exporter is down or unscraped.",
                "runbook": "Check that `easeoff exporter` runs and that Prometheus scrapes it (Status > Targets).",
            },
        },
    ]
    if runbook_url:
        for rule in rules:
            rule["annotations"]["runbook_url"] = runbook_url
    return rules


def switch_rules(config: Config, runbook_url: str | None = None) -> list[dict[str, Any]]:
    """A switch left on is the toggle nobody cleans up: alert once it is older than the config's limit."""
    kind, scope = "{{ $labels.kind }}", "{{ $labels.scope }}"
    annotations = {
        "summary": f"Switch {kind} {scope} has been on longer than {number(config.switch_stale_after)}s",
        "description": f"Switch {kind} {scope} has been on for {{{{ $value | humanizeDuration }}}}.",
        "runbook": SWITCH_STALE_RUNBOOK,
    }
    if runbook_url:
        annotations["runbook_url"] = runbook_url
    rule = {
        "alert": "EaseoffSwitchStale",
        "expr": f"{names.SWITCH_AGE} > {number(config.switch_stale_after)}",
        "for": "0s",
        "labels": {"severity": "warning"},
        "annotations": annotations,
    }
    return [rule]


def budget_rules(runbook_url: str | None = None) -> list[dict[str, Any]]:
    """A budget breached for longer than the controller's cuts take to act (a slack below 0 at every
    step for BUDGET_BREACH_FOR). No series without a budget, so no alert."""
    resource = "{{ $labels.resource }}"
    annotations = {
        "summary": f"Budget of {resource} breached for {duration(BUDGET_BREACH_FOR)}",
        "description": f"The tightest ceiling of {resource}'s budget is over its limit: slack "
        + "{{ $value | humanizePercentage }}.",
        "runbook": BUDGET_BREACHED_RUNBOOK,
    }
    if runbook_url:
        annotations["runbook_url"] = runbook_url
    rule = {
        "alert": "EaseoffBudgetBreached",
        "expr": f"{names.BUDGET_SLACK} < 0",
        "for": duration(BUDGET_BREACH_FOR),
        "labels": {"severity": "warning"},
        "annotations": annotations,
    }
    return [rule]


def rule_groups(config: Config, runbook_url: str | None = None) -> dict[str, Any]:
    return {
        "groups": [
            {"name": WATERMARK_GROUP, "rules": [alarm_rule(a, runbook_url) for a in config_alarms(config)]},
            {"name": EXPORTER_GROUP, "rules": exporter_rules(runbook_url)},
            {"name": SWITCH_GROUP, "rules": switch_rules(config, runbook_url)},
            {"name": BUDGET_GROUP, "rules": budget_rules(runbook_url)},
        ]
    }


def render_rules(config: Config, runbook_url: str | None = None) -> str:
    source = " ".join(config.source.splitlines())
    header = f"# Generated by `easeoff alerts rules` from {source}; regenerate after changing water marks.\n"
    return header + to_yaml(rule_groups(config, runbook_url))


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for maps, lists, strings and numbers: all this file needs."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return f"{pad}{{}}\n"
        lines = []
        for key, item in value.items():
            if _is_scalar(item) or item in ([], {}):
                lines.append(f"{pad}{key}: {_scalar(item)}\n")
            else:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 1)}")
        return "".join(lines)
    if isinstance(value, list):
        if not value:
            return f"{pad}[]\n"
        lines = []
        for item in value:
            if _is_scalar(item):
                lines.append(f"{pad}- {_scalar(item)}\n")
            else:
                body = to_yaml(item, indent + 1)
                lines.append(f"{pad}- {body[len(pad) + 2 :]}")
        return "".join(lines)
    return f"{pad}{_scalar(value)}\n"


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _scalar(value: Any) -> str:
    if value == [] or value == {}:
        return json.dumps(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return number(float(value)) if isinstance(value, float) else str(value)
    return quoted(value)


def quoted(text: str) -> str:
    """A YAML single-quoted scalar (only `'` needs escaping, so PromQL's double quotes stay
    readable); text with control characters falls back to a JSON (double-quoted) string.
    Always quoted: a plain `on` or `no` would be read back as a boolean by YAML 1.1 parsers."""
    if all(ch.isprintable() for ch in text):
        return "'" + text.replace("'", "''") + "'"
    return json.dumps(text)
