"""The state of every resource as plain data: what `status`, `probe` and the exporter show."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from easeoff.feedback.config import REPLICATING_ROLES, Config
from easeoff.feedback.reasons import texts
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.tally.unknown_resources import UnknownResource
from easeoff.feedback.verdict.gate import applicable_signals, global_findings, judge, live_config, queue_reasons
from easeoff.feedback.verdict.shadow import ShadowJudge


def reading_report(reading: Reading | None, now: float) -> dict[str, Any]:
    if reading is None:
        return {
            "age_s": None,
            "error": "no reading yet",
            "values": {},
            "strained": {},
            "shadow_strained": {},
            "notes": {},
        }
    return {
        "age_s": round(now - reading.taken_at, 3),
        "error": reading.error,
        "values": {k: round(v, 4) for k, v in reading.values.items()},
        "strained": reading.strained,
        "shadow_strained": reading.shadow_strained,  # under ops' shadow thresholds, its own band
        "notes": reading.notes,
    }


def resources_report(
    config: Config, snapshot: Snapshot, now: float, unknown: Sequence[UnknownResource] = ()
) -> dict[str, Any]:
    """Per resource: verdict, reasons, and per host its role and each signal's value, thresholds, state.
    Resources jobs named that the config does not declare come last, held, with the reason.
    `shadow`: what the policies on trial would hold it for beyond the verdict (they hold nothing)."""
    shadow = ShadowJudge()
    as_configured, config = config, live_config(config, snapshot, now)
    report: dict[str, Any] = {}
    for name, resource in config.resources.items():
        verdict = judge([name], snapshot, config, now)
        would = shadow.would_defer([name], snapshot, as_configured, now, verdict.reasons)
        hosts = {}
        for host in resource.hosts:
            role = resource.role(host)
            reading = snapshot.get(host)
            signals = {}
            for signal in applicable_signals(role, resource, config):
                limits = config.thresholds(signal.name, host)
                value = reading.values.get(signal.name) if reading else None
                signals[signal.name] = {
                    "value": None if value is None else round(value, 4),
                    "high": limits.high,
                    "low": limits.low,
                    "critical": limits.critical,
                    "state": _state(reading, signal.name),
                    "mode": signal.mode,
                }
            if role in REPLICATING_ROLES:
                value = reading.values.get("replication") if reading else None
                signals["replication"] = {
                    "value": value,
                    "state": _state(reading, "replication"),
                    "note": reading.notes.get("replication", "") if reading else "",
                }
            hosts[host] = {
                "role": role,
                "out": snapshot.hosts_out.get(host),
                **reading_report(reading, now),
                "signals": signals,
            }
        report[name] = {
            "verdict": verdict.label,
            "reasons": verdict.texts,
            "critical": texts(verdict.critical),
            "shadow": texts(would),
            "hosts": hosts,
        }
    for missing in unknown:
        reason = missing.reason(now, config.backoff.unknown_resource_grace)
        report[missing.name] = {
            "verdict": "defer",
            "reasons": [reason],
            "critical": [],
            "shadow": [],
            "hosts": {},
            "unknown": True,
        }
    return report


def held_queues(config: Config, queues: Iterable[str], snapshot: Snapshot, now: float) -> dict[str, list[str]]:
    """Why a gated worker would not dequeue from each queue now (empty: it would)."""
    config = live_config(config, snapshot, now)
    return {q: texts(queue_reasons(q, snapshot, config, now)) for q in queues}


def traffic_report(config: Config, snapshot: Snapshot, now: float) -> dict[str, Any]:
    config = live_config(config, snapshot, now)
    report = {}
    for signal in config.signals.values():
        if not signal.is_traffic:
            continue
        reading = snapshot.get(signal.source_key)
        report[signal.name] = {
            "source": signal.source,
            "scope": "global" if signal.resources is None else list(signal.resources),
            "value": reading.values.get(signal.name) if reading else None,
            "high": signal.high,
            "low": signal.low,
            "state": _state(reading, signal.name),
            "mode": signal.mode,
            "error": reading.error if reading else "no reading yet",
        }
    return report


def global_report(config: Config, snapshot: Snapshot, now: float) -> dict[str, Any]:
    reasons, critical = global_findings(snapshot, config, now)
    return {"verdict": "defer" if reasons else "admit", "reasons": texts(reasons), "critical": texts(critical)}


def switches_report(snapshot: Snapshot, now: float, stale_after: float) -> list[dict[str, Any]]:
    """The switches in force, each with who set it, why, how long it has been on and when it lapses."""
    return [
        {
            **s.as_dict(),
            "describe": s.describe(),
            "age_s": s.age(now),
            "stale": s.stale(now, stale_after),
            "expires_in_s": None if s.expires_at is None else s.expires_at - now,
        }
        for s in sorted(snapshot.switches.live(now), key=lambda s: s.at)
    ]


def _state(reading: Reading | None, signal: str) -> str:
    if reading is None or reading.error:
        return "unknown"
    if signal not in reading.values:
        return "unknown"
    return "strained" if reading.strained.get(signal) else "ok"
