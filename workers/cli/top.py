"""`easeoff top`: a live terminal view of queues, verdicts, switches and events.

For the operator at a shell during an incident, where the page or Grafana is a tunnel away.
It reads only what is in Redis — queue counts, the exporter's history (for the depth
sparklines), cached readings, switches and the event log — and never probes MySQL, so
running it costs the fleet nothing. Registered in workers/cli/__init__.py like the observability
commands; rich is imported inside the command, since every `easeoff` process imports this.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click
import msgspec

from easeoff.feedback import clock
from easeoff.feedback.connect import REDIS_UNREACHABLE
from easeoff.workers.cli.helpers import Context, guarded, pass_context

if TYPE_CHECKING:
    from redis import Redis
    from rich.console import RenderableType

    from easeoff.feedback.config import Config
    from easeoff.feedback.levers.events import Event
    from easeoff.feedback.observe.history import Sample
    from easeoff.feedback.observe.queue_stats import QueueStats

BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 30
RECENT_EVENTS = 8


class Frame(msgspec.Struct, frozen=True):
    """Everything one screen shows, read from Redis at `now`."""

    now: float
    queues: list[QueueStats]
    history: list[Sample]
    report: dict[str, Any]
    switches: list[Any]  # feedback.switches.Switch, when that module is there
    events: list[Event]


@click.command("top")
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts and tests).")
@click.option(
    "--hours", default=1.0, show_default=True, type=click.FloatRange(0.01, 24), help="Span of the depth sparklines."
)
@click.option(
    "--every",
    type=click.FloatRange(0.1, 3600),
    default=None,
    help="Seconds between refreshes (default: probe interval).",
)
@pass_context
@guarded
def top(ctx: Context, once: bool, hours: float, every: float | None) -> None:
    """A live view: queues with depth sparklines and water marks, verdicts and reasons, switches and
    recent events. Ctrl-C quits."""
    from rich.console import Console
    from rich.live import Live

    config, connection = ctx.config, ctx.redis
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a pipe or a file: wide enough that rows do not wrap
    if once:
        console.print(render(read_frame(connection, config, hours, clock.now()), config, hours))
        return
    interval = every or config.probe_interval
    try:
        with Live(_safe_frame(connection, config, hours), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(_safe_frame(connection, config, hours), refresh=True)
    except KeyboardInterrupt:
        return  # Ctrl-C is how one leaves `top`: exit 0


def read_frame(connection: Redis, config: Config, hours: float, now: float) -> Frame:
    """The reads `status` makes, plus the history and the events."""
    from easeoff.feedback.levers import events as event_log
    from easeoff.feedback.observe.history import read_history
    from easeoff.feedback.observe.queue_stats import queue_stats
    from easeoff.feedback.observe.report import global_report, resources_report
    from easeoff.feedback.queue_names import known_queue_names
    from easeoff.feedback.signals.cache import ReadingsCache

    snapshot = ReadingsCache(connection, config).stored()
    return Frame(
        now=now,
        queues=queue_stats(connection, known_queue_names(connection, config.queues), now),
        history=read_history(connection, now - hours * 3600),
        report={
            "global": global_report(config, snapshot, now),
            "resources": resources_report(config, snapshot, now),
        },
        switches=_switches(connection, now),
        events=event_log.recent(connection, RECENT_EVENTS),
    )


def _switches(connection: Redis, now: float) -> list[Any]:
    from easeoff.feedback.levers.switches import read_switches

    return sorted(read_switches(connection).live(now), key=lambda s: s.key)


def _safe_frame(connection: Redis, config: Config, hours: float) -> RenderableType:
    """A frame, or a line saying Redis is unreadable: a blip must not end the view."""
    from rich.text import Text

    try:
        return render(read_frame(connection, config, hours, clock.now()), config, hours)
    except REDIS_UNREACHABLE as exc:
        return Text(f"{_clock(clock.now())}  cannot read Redis at {config.redis_url_redacted}: {exc}", style="red")


def render(frame: Frame, config: Config, hours: float) -> RenderableType:
    from rich.console import Group
    from rich.text import Text

    title = Text(f"easeoff top  {_clock(frame.now)}  Redis {config.redis_url_redacted}", style="bold")
    return Group(
        title,
        _queues_table(frame, config, hours),
        _resources_table(frame),
        _switches_table(frame),
        _events_table(frame),
    )


def _queues_table(frame: Frame, config: Config, hours: float) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="queues", title_justify="left", expand=False)
    for column in ("QUEUE", "READY", "DEFERRED", "RUNNING", "FAILED", "AGE"):
        table.add_column(column, justify="left" if column == "QUEUE" else "right")
    table.add_column(f"DEPTH, LAST {hours:g} H")
    table.add_column("WATER MARKS")
    for s in frame.queues:
        marks = config.queues[s.name].watermarks if s.name in config.queues else ()
        depth = [(h.t, h.queues[s.name]["ready"]) for h in frame.history if s.name in h.queues]
        spark = sparkline(depth, frame.now - hours * 3600, frame.now, SPARK_WIDTH)
        table.add_row(
            Text(s.name),
            Text(str(s.ready), style=_mark_style(marks, "depth", s.ready)),
            str(s.deferred),
            str(s.running),
            Text(str(s.failed), style="red" if s.failed else ""),
            Text(f"{s.oldest_ready_age_s:.1f}s", style=_mark_style(marks, "age", s.oldest_ready_age_s)),
            Text(spark or "no samples yet", style="cyan" if spark else "dim"),
            Text("  ".join(_describe_mark(m) for m in marks) or "-"),
        )
    return table


def _resources_table(frame: Frame) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="resources", title_justify="left")
    table.add_column("RESOURCE")
    table.add_column("VERDICT")
    table.add_column("REASONS")
    overall = frame.report["global"]
    if overall["reasons"]:
        table.add_row(Text("(global)"), _verdict(overall["verdict"]), Text("; ".join(overall["reasons"])))
    for name, info in frame.report["resources"].items():
        reasons = "; ".join([*info["reasons"], *(f"CRITICAL {c}" for c in info["critical"])]) or "-"
        table.add_row(Text(name), _verdict(info["verdict"]), Text(reasons))
    return table


def _switches_table(frame: Frame) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="switches", title_justify="left")
    table.add_column("SWITCH")
    table.add_column("BY")
    table.add_column("WHY")
    for switch in frame.switches:
        table.add_row(Text(switch.describe(), style="yellow"), Text(switch.by), Text(switch.why))
    if not frame.switches:
        table.add_row(Text("none", style="dim"), "", "")
    return table


def _events_table(frame: Frame) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="recent events", title_justify="left")
    for column in ("TIME", "KIND", "WHO", "WHAT", "WHY"):
        table.add_column(column)
    for e in frame.events:
        table.add_row(_clock(e.at), Text(e.kind), Text(e.who), Text(e.text), Text(e.why))
    if not frame.events:
        table.add_row(Text("none", style="dim"), "", "", "", "")
    return table


def sparkline(points: Sequence[tuple[float, float]], start: float, end: float, width: int) -> str:
    """`width` columns over [start, end], each the highest value in its slice as a block (blank: no
    sample there), scaled to the highest value shown; empty when there are no points at all."""
    if not points or end <= start:
        return ""
    columns: list[float | None] = [None] * width
    for t, value in points:
        if start <= t <= end:
            i = min(width - 1, int((t - start) / (end - start) * width))
            columns[i] = value if columns[i] is None else max(columns[i] or 0.0, value)
    shown = [v for v in columns if v is not None]
    if not shown:
        return ""
    top, steps = max(max(shown), 1.0), len(BLOCKS) - 1
    return "".join(" " if v is None else BLOCKS[min(steps, round(v / top * steps))] for v in columns)


def _mark_style(marks: Sequence[Any], measure: str, value: float) -> str:
    """Red above a high-water mark, yellow below a low one (as the alarms would see it, without `for`)."""
    for mark in marks:
        if mark.measure != measure:
            continue
        if mark.high is not None and value > mark.high:
            return "bold red"
        if mark.low is not None and value < mark.low:
            return "yellow"
    return ""


def _describe_mark(mark: Any) -> str:
    levels = [f"{level} {value:g}" for level, value in (("high", mark.high), ("low", mark.low)) if value is not None]
    return f"{mark.measure} " + " / ".join(levels)


def _verdict(verdict: str) -> Any:
    from rich.text import Text

    return Text(verdict, style="green" if verdict == "admit" else "bold red")


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))
