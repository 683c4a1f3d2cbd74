"""What holds the fleet now: `status`, `probe`, and hosts taken out of production."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import click

from easeoff.feedback import clock
from easeoff.feedback.budget.state import BudgetState, read_budgets
from easeoff.feedback.config import Config
from easeoff.feedback.durations import age_text
from easeoff.feedback.levers import events
from easeoff.feedback.levers.hosts_out import mark_in, mark_out
from easeoff.feedback.levers.limits import current_limits
from easeoff.feedback.observe.queue_stats import queue_stats
from easeoff.feedback.observe.report import (
    global_report,
    held_queues,
    resources_report,
    switches_report,
    traffic_report,
)
from easeoff.feedback.queue_names import known_queue_names
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.tally import shadow_tally, unknown_resources
from easeoff.workers.cli.helpers import Context, fail, guarded, pass_context


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
@guarded
def status(ctx: Context, as_json: bool) -> None:
    """Queues (ready, deferred, running, failed, oldest age) and each resource's verdict."""
    config, connection = ctx.config, ctx.redis
    stats = queue_stats(connection, known_queue_names(connection, config.queues))
    snapshot = ReadingsCache(connection, config).stored()
    held = held_queues(config, [s.name for s in stats], snapshot, clock.now())
    report = {
        "queues": {
            s.name: {**{k: v for k, v in s.as_dict().items() if k != "name"}, "held": held[s.name]} for s in stats
        },
        **_feedback_report(config, snapshot, unknown_resources.read(connection, config.resources)),
        "switches": switches_report(snapshot, clock.now(), config.switch_stale_after),
        "shadow": [c.as_dict() for c in shadow_tally.read(connection, clock.now())],
        "audit": [e.as_dict() for e in events.recent(connection, 5, events.OPERATOR_KINDS)],
        **_limits_report(ctx),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    click.echo(f"{'QUEUE':<16}{'READY':>8}{'DEFERRED':>10}{'RUNNING':>9}{'FAILED':>8}{'OLDEST':>10}  HELD")
    for s in stats:
        why = "; ".join(held[s.name]) or "-"
        click.echo(
            f"{s.name:<16}{s.ready:>8}{s.deferred:>10}{s.running:>9}{s.failed:>8}{s.oldest_ready_age_s:>9.1f}s  {why}"
        )
    click.echo("")
    _print_feedback(report)
    click.echo("")
    _print_limits(report)
    _print_shadow(report)
    click.echo("SWITCHES")
    for s in report["switches"]:
        stale = "  STALE" if s["stale"] else ""
        click.echo(f"  {s['describe']}  on {age_text(s['age_s'])}{stale}  by {s['by']}: {s['why']}")
    if not report["switches"]:
        click.echo("  none")
    click.echo("RECENT CHANGES (easeoff log)")
    for e in report["audit"]:
        stamp = time.strftime("%H:%M:%S", time.localtime(e["at"]))
        click.echo(f"  {stamp} {e['who']}: {e['text']}" + (f" ({e['why']})" if e["why"] else ""))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
@guarded
def probe(ctx: Context, as_json: bool) -> None:
    """Probe every host and traffic source now; show each signal's value, thresholds and state."""
    config, connection = ctx.config, ctx.redis
    snapshot = ReadingsCache(connection, config).probe_now()
    report = _feedback_report(config, snapshot, unknown_resources.read(connection, config.resources))
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    _print_feedback(report)


def _feedback_report(
    config: Config, snapshot: Snapshot, unknown: Sequence[unknown_resources.UnknownResource] = ()
) -> dict[str, Any]:
    now = clock.now()
    return {
        "global": global_report(config, snapshot, now),
        "traffic": traffic_report(config, snapshot, now),
        "resources": resources_report(config, snapshot, now, unknown),
    }


def _print_feedback(report: dict[str, Any]) -> None:
    overall = report["global"]
    click.echo(f"GLOBAL          {overall['verdict']}")
    for reason in overall["reasons"]:
        click.echo(f"{'':<16}- {reason}")
    for name, t in report["traffic"].items():
        value = "?" if t["value"] is None else f"{t['value']:.4g}"
        scope = t["scope"] if isinstance(t["scope"], str) else ",".join(t["scope"])
        click.echo(
            f"  {name:<14}{t['source']:<11}{value:>10}  high {t['high']:g} low {t['low']:g}  {t['state']} ({scope})"
        )
    click.echo("")
    click.echo(f"{'RESOURCE':<16}{'VERDICT':<9}REASONS")
    for name, info in report["resources"].items():
        click.echo(f"{name:<16}{info['verdict']:<9}{'; '.join(info['reasons']) or '-'}")
        for critical in info["critical"]:
            click.echo(f"{'':<25}CRITICAL {critical}")
        for host, h in info["hosts"].items():
            state = f"OUT ({h['out']})" if h["out"] else (f"probe error: {h['error']}" if h["error"] else "")
            click.echo(f"  {host:<14}{h['role']:<9}{state}")
            for signal, v in h["signals"].items():
                value = "?" if v["value"] is None else f"{v['value']:.4g}"
                limits = f"high {v['high']:g} low {v['low']:g}" if "high" in v else v.get("note", "")
                mode = " (shadow)" if v.get("mode") == "shadow" else ""
                click.echo(f"    {signal:<16}{value:>10}  {limits:<24}{v['state']}{mode}")


def _limits_report(ctx: Context) -> dict[str, Any]:
    """Every limited resource's fleet-wide concurrency (from its table or its budget), and each
    budget as its controller last saw and set it."""
    now = clock.now()
    budgets: dict[str, BudgetState] = read_budgets(ctx.redis, ctx.config, now)
    return {
        "limits": {
            name: {"limit": limit, "in_use": in_use, "source": "budget" if name in budgets else "concurrency"}
            for name, (limit, in_use) in current_limits(ctx.redis, ctx.config, now).items()
        },
        "budgets": {name: b.as_dict(now) for name, b in budgets.items()},
    }


def _print_limits(report: dict[str, Any]) -> None:
    """Silent when no resource is limited."""
    if not report["limits"]:
        return
    click.echo(f"{'LIMITED':<16}{'LIMIT':>6}{'IN USE':>8}  {'PACE':<8}SET BY")
    for name, lim in report["limits"].items():
        budget = report["budgets"].get(name)
        pace = "full" if budget is None or budget["duty"] is None else f"{budget['duty']:.0%}"
        click.echo(f"{name:<16}{lim['limit']:>6}{lim['in_use']:>8}  {pace:<8}{lim['source']}")
        if budget is None:
            continue
        seen = []
        for ceiling, c in budget["ceilings"].items():
            value = "?" if c["value"] is None else f"{c['value']:.4g}{c['unit']}"
            most = "?" if c["limit"] is None else f"{c['limit']:.4g}{c['unit']}"
            seen.append(f"{ceiling} {value} of {most}")
        baseline = "?" if budget["baseline"] is None else f"{budget['baseline']:.4g}s"
        slack = "?" if budget["slack"] is None else f"{budget['slack']:.0%}"
        click.echo(f"{'':<16}budget: {'; '.join(seen)}; baseline {baseline}; slack {slack}")
        decision = budget["decision"]
        if decision is None:
            click.echo(f"{'':<16}never stepped: no worker probes for the fleet yet")
        else:
            click.echo(f"{'':<16}{age_text(decision['age_s'])} ago: {decision['text']}")
    click.echo("")


def _print_shadow(report: dict[str, Any]) -> None:
    """Shadow verdicts apart from the real ones: what the policies on trial would hold now, and
    how many jobs they would have deferred in the last hour. Silent when nothing is on trial."""
    now_held = {name: info["shadow"] for name, info in report["resources"].items() if info["shadow"]}
    if not now_held and not report["shadow"]:
        return
    click.echo("SHADOW (policies on trial: judged and counted, holding nothing)")
    for name, reasons in now_held.items():
        click.echo(f"  {name:<14}would defer now: {'; '.join(reasons)}")
    for c in report["shadow"]:
        click.echo(f"  {c['resource']:<14}would have deferred {c['last_hour']} jobs in the last hour ({c['signal']})")
    click.echo("")


@click.group("host")
def host_group() -> None:
    """Take a MySQL host out of production, or put it back."""


@host_group.command("out")
@click.argument("host")
@click.option("--reason", required=True, help="Why: shown in every verdict it causes.")
@click.option("--by", default=None, help="Who (default: the current user).")
@pass_context
@guarded
def host_out(ctx: Context, host: str, reason: str, by: str | None) -> None:
    """Mark HOST out: work on a pair it belongs to waits; a replica leaves the aggregate."""
    _known_host(ctx.config, host)
    mark_out(ctx.redis, host, reason, by)
    click.echo(f"{host} is out of production: {reason}")


@host_group.command("in")
@click.argument("host")
@click.option("--reason", default="", help="Why (for the log).")
@click.option("--by", default=None, help="Who (default: the current user).")
@pass_context
@guarded
def host_in(ctx: Context, host: str, reason: str, by: str | None) -> None:
    """Put HOST back into production."""
    _known_host(ctx.config, host)
    was_out = mark_in(ctx.redis, host, by, reason)
    click.echo(f"{host} is in production" + ("" if was_out else " (it was not out)"))


def _known_host(config: Config, host: str) -> None:
    if host not in config.hosts:
        fail(f"unknown host {host!r} (known: {', '.join(config.hosts) or 'none'})")
