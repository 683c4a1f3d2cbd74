"""The exporter's HTTP server: /metrics for Prometheus, / (the page), three JSON endpoints and
/healthz (200 while Redis answers a PING, 503 otherwise: for a supervisor or a load balancer).

prometheus-client's `start_http_server` serves metrics only, so this is a small threading
`http.server` that serves the registry itself and the page beside it, on the same port.
Read-only: every route is a GET that reads Redis and answers; nothing can be changed over
HTTP (http.server answers any other method with 501). The page's own script polls
`/api/state`; its Content-Security-Policy lets only that script and style run, and fetch
only from here.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import socketserver
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from redis import Redis

from easeoff.feedback.config import Config
from easeoff.feedback.connect import REDIS_UNREACHABLE
from easeoff.feedback.levers import events as event_log
from easeoff.feedback.observe.console import CONTENT_SECURITY_POLICY
from easeoff.feedback.observe.history import read_history
from easeoff.feedback.observe.page import (
    DEFAULT_HOURS,
    DEFAULT_REFRESH,
    MAX_HOURS,
    MAX_REFRESH,
    MIN_REFRESH,
    render_page,
    state_document,
)

log = logging.getLogger("easeoff.exporter")

HTML = "text/html; charset=utf-8"
JSON = "application/json"
MAX_MS = 1e16  # a bound for `from`/`to`, far past any real timestamp
GZIP_ABOVE = 2048  # bytes: smaller answers go as they are


class BadRequest(ValueError):
    """A query parameter that cannot be used: answered with 400 and the message."""


class Site(msgspec.Struct, frozen=True):
    """What the routes read: the metrics registry, Redis and the config."""

    registry: CollectorRegistry
    redis: Redis
    config: Config
    clock: Callable[[], float] = time.time


class ExporterServer(ThreadingHTTPServer):
    """A threading HTTP server for `site`, on IPv4 or IPv6 as the host address says."""

    daemon_threads = True
    allow_reuse_port = False  # a second exporter on a busy port must fail, not share it

    def __init__(self, host: str, port: int, site: Site) -> None:
        self.site = site
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        self.address_family = infos[0][0]
        address = infos[0][4]
        super().__init__((str(address[0]), int(address[1])), Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse-DNS lookup of the address (slow, and unused here)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    server_version = "easeoff"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = parse_qs(url.query)
        if url.path == "/metrics":
            self._answer(HTTPStatus.OK, *metrics(self.server.site, self.headers.get("Accept", "")))
            return
        routes: dict[str, Callable[[Site, dict[str, list[str]]], tuple[str, bytes]]] = {
            "/": page,
            "/api/history": history_json,
            "/api/events": events_json,
            "/api/state": state_json,
            "/healthz": healthz,
        }
        route = routes.get(url.path)
        if route is None:
            self._answer(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")
            return
        try:
            content_type, body = route(self.server.site, params)
        except BadRequest as exc:
            self._answer(HTTPStatus.BAD_REQUEST, "text/plain; charset=utf-8", f"{exc}\n".encode())
        except REDIS_UNREACHABLE as exc:
            log.debug("%s not served: %s", url.path, exc)
            message = f"cannot read Redis at {self.server.site.config.redis_url_redacted}\n"
            self._answer(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", message.encode())
        else:
            self._answer(HTTPStatus.OK, content_type, body, compress=True)

    def _answer(self, status: HTTPStatus, content_type: str, body: bytes, compress: bool = False) -> None:
        """`compress`: gzip the page and the JSON when the client takes it (a poll's charts shrink ~6x)."""
        gzipped = compress and len(body) > GZIP_ABOVE and "gzip" in self.headers.get("Accept-Encoding", "")
        if gzipped:
            body = gzip.compress(body, compresslevel=5)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if compress:
            self.send_header("Vary", "Accept-Encoding")
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if content_type == HTML:
            self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests at debug: the exporter's log is for water-mark transitions, not access lines."""
        log.debug("%s %s", self.address_string(), format % args)


def healthz(site: Site, params: dict[str, list[str]]) -> tuple[str, bytes]:
    """200 when Redis answers a PING; Redis away raises, and the handler answers 503 with why."""
    site.redis.ping()
    return "text/plain; charset=utf-8", b"ok\n"


def metrics(site: Site, accept: str) -> tuple[str, bytes]:
    """The registry in the format the scraper asks for (OpenMetrics for Prometheus, else text 0.0.4),
    as prometheus-client's own server negotiates it; a Redis outage is in the body (`easeoff_redis_up 0`)."""
    encoder, content_type = choose_encoder(accept)
    return content_type, encoder(site.registry)


def page(site: Site, params: dict[str, list[str]]) -> tuple[str, bytes]:
    hours = number(params, "hours", DEFAULT_HOURS, 0.01, MAX_HOURS)
    refresh = number(params, "refresh", DEFAULT_REFRESH, MIN_REFRESH, MAX_REFRESH)
    now = site.clock()
    return HTML, render_page(site.redis, site.config, hours, now, refresh).encode()


def state_json(site: Site, params: dict[str, list[str]]) -> tuple[str, bytes]:
    """What the page shows, as data (`state`) and as the page's sections (`sections`), which its
    script polls; the same query as the page (`hours`, `refresh`)."""
    hours = number(params, "hours", DEFAULT_HOURS, 0.01, MAX_HOURS)
    refresh = number(params, "refresh", DEFAULT_REFRESH, MIN_REFRESH, MAX_REFRESH)
    now = site.clock()
    document = state_document(site.redis, site.config, hours, now, refresh)
    return JSON, json.dumps(document, separators=(",", ":")).encode()


def history_json(site: Site, params: dict[str, list[str]]) -> tuple[str, bytes]:
    hours = number(params, "hours", DEFAULT_HOURS, 0.01, MAX_HOURS)
    samples = read_history(site.redis, site.clock() - hours * 3600)
    return JSON, json.dumps([s.as_dict() for s in samples], separators=(",", ":")).encode()


def events_json(site: Site, params: dict[str, list[str]]) -> tuple[str, bytes]:
    """Events as Grafana annotations (JSON / Infinity data source): time and timeEnd in ms."""
    now_ms = site.clock() * 1000
    end = number(params, "to", now_ms, 0, MAX_MS)
    start = number(params, "from", end - DEFAULT_HOURS * 3600 * 1000, 0, MAX_MS)
    annotations = [
        {
            "time": int(e.at * 1000),
            "timeEnd": int(e.at * 1000),
            "title": e.text,
            "text": " · ".join(part for part in (e.text, e.who and f"by {e.who}", e.why and f"why: {e.why}") if part),
            "tags": [e.kind],
        }
        for e in event_log.between(site.redis, start / 1000, end / 1000)
    ]
    return JSON, json.dumps(annotations, separators=(",", ":")).encode()


def number(params: dict[str, list[str]], name: str, default: float, low: float, high: float) -> float:
    """Query parameter `name` as a number within [low, high]; absent → `default`."""
    raw = params.get(name, [""])[-1].strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number, not {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low:g} and {high:g}")
    return value
