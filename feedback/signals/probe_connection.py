"""A probe's MySQL connection: opened safely beside forks, TLS built once per process, and its
errors described in a few words with no secret in them (feedback/signals/sources/mysql.py)."""

from __future__ import annotations

import os
import re
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import pymysql
import pymysql.connections

from easeoff.feedback.config import MySQLHost
from easeoff.feedback.tls import HostTLS, client_context

PROBE_FAILURES = (TimeoutError, pymysql.MySQLError, OSError)
TLS_FAILURE = re.compile(r"\[SSL[^\]]*\]\s*([^(]*)")  # `[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify...`

# Probes run on threads of the worker's main process, which forks a work horse per job. A fork
# taken while a probe thread is inside OpenSSL (building a context, a TLS handshake) leaves
# OpenSSL's locks held in the horse for good: the job's own first TLS connection then hangs.
# So OpenSSL's part of opening a connection (the context, the handshake and login that follow
# the server's greeting) runs under this lock, and a fork waits for it (os.register_at_fork).
# A host that never greets holds up no fork.
_FORK_GUARD = threading.Lock()
os.register_at_fork(before=_FORK_GUARD.acquire, after_in_parent=_FORK_GUARD.release, after_in_child=_FORK_GUARD.release)


class _ProbeConnection(pymysql.connections.Connection):
    """pymysql's default (PREFERRED) TLS mode builds a new SSL context for every connection,
    loading the CA store (about 50 ms of CPU in the worker's main process), before it knows
    whether the server offers TLS at all. A probe connection builds no context of its own: it
    holds a `_SharedPreferredContext`, which loads the CA store once per process, the first time
    a server offers TLS. A cold worker probing servers without TLS never pays for it, and its
    first reading (which its first job waits for) is not 50 ms late.

    It counts the statements it sends, so a budget's server-side latency can take the probe's
    own statements out of the server's counts (feedback/signals/live_latency.py)."""

    statements = 0

    def query(self, sql: str | bytes, unbuffered: bool = False) -> int:
        self.statements += 1
        return super().query(sql, unbuffered)

    def _create_ssl_ctx(self, sslp: Any) -> Any:
        # pymysql's private hooks, absent from its type stubs
        if sslp == {}:
            return _SharedPreferredContext(super()._create_ssl_ctx)  # type: ignore[misc]
        with _FORK_GUARD:
            return super()._create_ssl_ctx(sslp)  # type: ignore[misc]

    def _request_authentication(self) -> None:
        with _FORK_GUARD:  # the TLS handshake, if the server offers TLS, and the login
            super()._request_authentication()  # type: ignore[misc]


class _SharedPreferredContext:
    """Stands in for PREFERRED mode's context: pymysql only wraps a socket with it, and only after
    a server's greeting offered TLS, inside `_request_authentication` (so under `_FORK_GUARD`).
    The first wrap builds the context with pymysql's own recipe, for the whole process (an
    SSLContext is made to be shared)."""

    _context: ssl.SSLContext | None = None

    def __init__(self, build: Callable[[dict[str, Any]], ssl.SSLContext]) -> None:
        self._build = build

    def wrap_socket(self, sock: socket.socket, server_hostname: str | None = None) -> ssl.SSLSocket:
        if _SharedPreferredContext._context is None:
            _SharedPreferredContext._context = self._build({})
        return _SharedPreferredContext._context.wrap_socket(sock, server_hostname=server_hostname)


def connect(host: MySQLHost, timeout: float) -> pymysql.connections.Connection:
    """A probe connection: over verified TLS only when the host's table asks for it
    (feedback/tls.py), else pymysql's PREFERRED mode on the shared context."""
    return _ProbeConnection(
        host=host.host,
        port=host.port,
        user=host.user,
        password=host.password,
        connect_timeout=timeout,
        read_timeout=timeout,
        write_timeout=timeout,
        autocommit=True,
        ssl=None if host.tls is None else _host_context(host.tls),
    )


_HOST_CONTEXTS: dict[HostTLS, ssl.SSLContext] = {}


def _host_context(tls: HostTLS) -> ssl.SSLContext:
    """One context per TLS setting per process, built once (under the fork guard, as every
    OpenSSL call here): pymysql takes an SSLContext as given, and requires TLS with it."""
    context = _HOST_CONTEXTS.get(tls)
    if context is None:
        with _FORK_GUARD:
            context = _HOST_CONTEXTS.setdefault(tls, client_context(tls))
    return context


def describe_error(exc: BaseException) -> str:
    """`2003 unreachable`-style text: the MySQL code when there is one, never the password."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timeout"
    if isinstance(exc, pymysql.MySQLError) and len(exc.args) >= 2 and isinstance(exc.args[0], int):
        message = str(exc.args[1])
        if "timed out" in message:
            return f"{exc.args[0]} timeout"
        tls = TLS_FAILURE.search(message)
        if tls:  # a certificate refused (wrong name, unknown CA) is not "unreachable": say which
            return f"{exc.args[0]} tls: {tls[1].strip(' .')[:80]}"
        if "Connection refused" in message or "Can't connect" in message:
            return f"{exc.args[0]} unreachable"
        return f"{exc.args[0]} {message[:80]}"
    return exc.__class__.__name__
