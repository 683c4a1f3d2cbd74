"""Contingency switches from the command line: pause, resume, throttle, thresholds, the log.

Every change is recorded with who, when and why (`easeoff log`), and every worker honours
it within one probe interval. Registered in workers/cli/__init__.py, as every command is.
"""

from __future__ import annotations

import json
import time

import click

from easeoff.feedback import clock
from easeoff.feedback.durations import age_text, parse_duration
from easeoff.feedback.levers import events
from easeoff.feedback.levers.switches import Switch, clear_switch, read_switches, set_switch, switch_key
from easeoff.feedback.scopes import Scope, ScopeKind
from easeoff.tasks.registry import get_task
from easeoff.workers.cli.helpers import Context, fail, guarded, pass_context

SCOPE_HELP = "all, queue:NAME, task:NAME or resource:NAME"
by_option = click.option("--by", default=None, help="Who (default: $EASEOFF_OPERATOR, else the login name).")
ttl_option = click.option("--ttl", default=None, help="Lapse by itself after this long (90s, 10m, 2h, 1d).")


def _fleet_now(ctx: Context) -> float:
    """Redis's time, measured before anything is stamped with it: connecting makes the fleet's
    clock this process's, and a switch's `at` and `expires_at` are read by every worker on that
    clock (an operator's laptop an hour off would otherwise pause for an hour more, or not at all)."""
    ctx.redis  # noqa: B018 - connecting is what follows the fleet's clock
    return clock.now()


def _stamps(ctx: Context, ttl: str | None, default: str | None = None) -> tuple[float, float | None]:
    """A switch's `at` and `expires_at` on the fleet's clock; a bad --ttl fails before connecting."""
    text = ttl or default
    try:
        lasts = parse_duration(text) if text is not None else None
    except ValueError as exc:
        fail(f"--ttl: {exc}")
    now = _fleet_now(ctx)
    return now, None if lasts is None else now + lasts


def _scope(ctx: Context, text: str) -> Scope:
    """SCOPE parsed, and checked to name something that exists, so a typo pauses nothing silently."""
    try:
        scope = Scope.parse(text)
    except ValueError:
        fail(f"bad scope {text!r}: use {SCOPE_HELP}")
    if scope.kind == ScopeKind.TASK:
        ctx.load_tasks()
        get_task(scope.name)  # an unknown task fails here, naming the known ones
    elif scope.kind == ScopeKind.RESOURCE and scope.name not in ctx.config.resources:
        fail(f"unknown resource {scope.name!r} (known: {', '.join(ctx.config.resources) or 'none'})")
    elif scope.kind == ScopeKind.QUEUE:
        ctx.check_queues([scope.name])
    return scope


@click.command("pause")
@click.argument("scope")
@click.option("--reason", required=True, help="Why: shown in every verdict it causes and in the log.")
@ttl_option
@by_option
@pass_context
@guarded
def pause(ctx: Context, scope: str, reason: str, ttl: str | None, by: str | None) -> None:
    """Pause SCOPE (all, queue:NAME, task:NAME or resource:NAME) until resumed or its TTL lapses.

    A paused queue is not dequeued from; a paused task's or resource's jobs are deferred and
    parked until it resumes. Running jobs finish (resumable ones at their next checkpoint)."""
    target = _scope(ctx, scope)
    _report_set(ctx, Switch("pause", str(target), by or events.operator(), reason, *_stamps(ctx, ttl)))


@click.command("resume")
@click.argument("scope")
@click.option("--reason", default="", help="Why (for the log).")
@by_option
@pass_context
@guarded
def resume(ctx: Context, scope: str, reason: str, by: str | None) -> None:
    """Undo `easeoff pause SCOPE`; parked jobs are released within one probe interval."""
    _report_cleared(ctx, switch_key("pause", _scope(ctx, scope)), reason, by)


@click.command("throttle")
@click.argument("task")
@click.argument("ratio", type=click.FloatRange(0.0, 1.0))
@click.option("--reason", required=True, help="Why (for the log and the deferral reasons).")
@ttl_option
@by_option
@pass_context
@guarded
def throttle(ctx: Context, task: str, ratio: float, reason: str, ttl: str | None, by: str | None) -> None:
    """Refuse RATIO (0..1) of TASK's jobs, as freno's throttle-app does; lapses after --ttl (default 1h)."""
    scope = str(_scope(ctx, str(Scope.task(task))))
    _report_set(ctx, Switch("throttle", scope, by or events.operator(), reason, *_stamps(ctx, ttl, "1h"), ratio=ratio))


@click.command("unthrottle")
@click.argument("task")
@click.option("--reason", default="", help="Why (for the log).")
@by_option
@pass_context
@guarded
def unthrottle(ctx: Context, task: str, reason: str, by: str | None) -> None:
    """Undo `easeoff throttle TASK`."""
    _report_cleared(ctx, switch_key("throttle", _scope(ctx, str(Scope.task(task)))), reason, by)


@click.command("threshold")
@click.argument("signal")
@click.option("--high", type=float, default=None, help="Strained above this.")
@click.option("--low", type=float, default=None, help="Healthy again only below this.")
@click.option("--critical", type=float, default=None, help="Running resumable jobs stop above this.")
@click.option("--resource", default=None, help="Only on this resource's hosts (default: everywhere).")
@click.option("--clear", is_flag=True, help="Drop the override: back to the config's thresholds.")
@click.option("--shadow", is_flag=True, help="Try the thresholds on live traffic: judged and counted, holding nothing.")
@click.option("--reason", default="", help="Why (required unless --clear).")
@ttl_option
@by_option
@pass_context
@guarded
def threshold(
    ctx: Context,
    signal: str,
    high: float | None,
    low: float | None,
    critical: float | None,
    resource: str | None,
    clear: bool,
    shadow: bool,
    reason: str,
    ttl: str | None,
    by: str | None,
) -> None:
    """Override SIGNAL's thresholds live (gh-ost's live threshold changes); lapses after --ttl (default 1h).

    With --shadow the override sits beside the real thresholds: its would-be deferrals are
    counted and logged (`status`, the page, easeoff_shadow_deferrals_total) and nothing is held."""
    config = ctx.config
    if signal not in config.signals:
        fail(f"unknown signal {signal!r} (known: {', '.join(config.signals) or 'none'})")
    if resource is not None and resource not in config.resources:
        fail(f"unknown resource {resource!r} (known: {', '.join(config.resources) or 'none'})")
    scope = str(Scope.signal(signal, resource or ""))
    if clear:
        _report_cleared(
            ctx,
            switch_key("shadow-threshold" if shadow else "threshold", Scope.signal(signal, resource or "")),
            reason,
            by,
        )
        return
    if high is None or low is None:
        fail("--high and --low are both required (or --clear)")
    if low > high or (critical is not None and critical < high):
        fail(f"thresholds must satisfy low <= high <= critical (got low {low:g}, high {high:g})")
    if not reason:
        fail("--reason is required: say why the thresholds move")
    who, (now, expires_at) = by or events.operator(), _stamps(ctx, ttl, "1h")
    limits = {"high": high, "low": low, "critical": critical}
    override = Switch("threshold", scope, who, reason, now, expires_at, **limits, shadow=shadow)
    _report_set(ctx, override)


def _report_set(ctx: Context, switch: Switch) -> None:
    set_switch(ctx.redis, switch)
    click.echo(f"switch on: {switch.describe()}")


def _report_cleared(ctx: Context, key: str, reason: str, by: str | None) -> None:
    gone = clear_switch(ctx.redis, key, by or events.operator(), reason)
    click.echo(f"switch off: {gone.describe()}" if gone else f"no switch {key!r} was on")


@click.command("switches")
@click.option("--stale", is_flag=True, help="Only switches on longer than [switches] stale_after (default 1d).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
@guarded
def switches(ctx: Context, stale: bool, as_json: bool) -> None:
    """The switches in force: what, who, why, how long on and until when."""
    now, limit = _fleet_now(ctx), ctx.config.switch_stale_after
    found = read_switches(ctx.redis)
    listed = found.stale(now, limit) if stale else sorted(found.live(now), key=lambda s: s.at)
    if as_json:
        rows = [{**s.as_dict(), "age_s": s.age(now), "stale": s.stale(now, limit)} for s in listed]
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    for s in listed:
        mark = "  STALE" if s.stale(now, limit) else ""
        click.echo(f"{s.describe()}  on {age_text(s.age(now))}{mark}  by {s.by}: {s.why}")
    if not listed:
        click.echo(f"no switch on longer than {age_text(limit)}" if stale else "no switches on")


@click.command("log")
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--all", "everything", is_flag=True, help="Also the system's own events (verdict flips).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
@guarded
def log(ctx: Context, limit: int, everything: bool, as_json: bool) -> None:
    """The audit log, newest first: every switch, host and annotation, with who, when and why."""
    found = events.recent(ctx.redis, limit, None if everything else events.OPERATOR_KINDS)
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in found], indent=2))
        return
    for e in found:
        why = f"  ({e.why})" if e.why else ""
        click.echo(f"{_when(e.at)}  {e.kind:<10} {e.who:<12} {e.text}{why}")
    if not found:
        click.echo("no events yet")


@click.command("annotate")
@click.argument("text")
@by_option
@pass_context
@guarded
def annotate(ctx: Context, text: str, by: str | None) -> None:
    """Add an event ("deploy 412") to the log, the page's graphs and Grafana's annotations."""
    if not text.strip():
        fail("the annotation is empty")
    events.record(ctx.redis, "annotation", text.strip(), who=by or events.operator())
    click.echo(f"annotated: {text.strip()}")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
