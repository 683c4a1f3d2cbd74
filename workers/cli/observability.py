"""`easeoff exporter`, `easeoff alerts rules` and `easeoff dashboard grafana`: observability commands.

Registered in workers/cli/__init__.py, as every command is.
The rules and the dashboard are rendered from the same config the exporter reads, so
thresholds live in one place: change a water mark, regenerate both.
"""

from __future__ import annotations

import errno
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from easeoff.workers.cli.helpers import Context, fail, guarded, pass_context

# Every `easeoff` process imports this module (workers too), so what the commands need —
# prometheus-client above all — is imported inside them, not here.
DEFAULT_HOST = "127.0.0.1"  # safe by default: bind to all interfaces only when told
DEFAULT_PORT = 9810


@click.command("exporter")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on (0.0.0.0: everywhere).")
@click.option(
    "--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535), help="0: any free port."
)
@click.option(
    "--evaluate-every",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.05, 3600),
    help="Seconds between water-mark evaluations (a fixed schedule, scrapes or not).",
)
@click.option(
    "--sample-every",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds between history samples for the page (taken on the first evaluation tick due).",
)
@pass_context
@guarded
def exporter(ctx: Context, host: str, port: int, evaluate_every: float, sample_every: float) -> None:
    """Serve Prometheus metrics read from Redis on each scrape and a page of the last hours at /,
    and evaluate queue water marks.

    Logs every water-mark transition. Never probes MySQL: it reads what the workers cached.
    """
    from easeoff.feedback.observe.exporter import Exporter

    if ctx.log_level is None:  # water-mark transitions are logged at info
        logging.getLogger("easeoff").setLevel(logging.INFO)
    config, connection = ctx.config, ctx.redis
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service = Exporter(connection, config, evaluate_every=evaluate_every, sample_every=sample_every)

    def listening(bound_host: str, bound_port: int) -> None:
        marks = len(service.monitor.alarms)
        address = f"[{bound_host}]" if ":" in bound_host else bound_host
        click.echo(
            f"easeoff exporter: serving http://{address}:{bound_port}/metrics and the page at / "
            f"(config {config.source}, Redis {config.redis_url_redacted}, {marks} water-mark alarms, "
            f"a history sample every {sample_every:g}s)",
            err=True,
        )

    try:
        service.serve(host, port, stop, on_listening=listening)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES) or isinstance(exc, PermissionError):
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        raise
    click.echo("easeoff exporter: stopped", err=True)


@click.group("alerts")
def alerts_group() -> None:
    """Prometheus alerting rules for the queues' water marks."""


@alerts_group.command("rules")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
@click.option("--runbook-url", default=None, help="Add a runbook_url annotation to every rule.")
@pass_context
@guarded
def alerts_rules(ctx: Context, output: str | None, runbook_url: str | None) -> None:
    """Print a Prometheus rules file: one alert per queue water mark, with hysteresis, `for` and
    `keep_firing_for` (Prometheus 2.42 or later), plus exporter-health alerts."""
    from easeoff.feedback.observe.alert_rules import render_rules

    _emit(render_rules(ctx.config, runbook_url), output)


@click.group("dashboard")
def dashboard_group() -> None:
    """Dashboards for the exporter's metrics."""


@dashboard_group.command("grafana")
@click.option("--title", default="easeoff", show_default=True, help="Dashboard title.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
@pass_context
@guarded
def dashboard_grafana(ctx: Context, title: str, output: str | None) -> None:
    """Print Grafana dashboard JSON: depth with water marks, age, throughput, deferrals and failures,
    signals with thresholds, switches, and events as annotations."""
    from easeoff.feedback.observe.dashboard import render_dashboard

    _emit(render_dashboard(ctx.config, title), output)


def _emit(text: str, output: str | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    click.echo(f"wrote {output}", err=True)
