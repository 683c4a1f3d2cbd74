"""Connections in use as a share of max_connections (the probe's own left out): near 1, new
connections are refused, the live site's first."""

from easeoff.feedback.mysql_signals import ServerStatus, StatusSignal


def _share(server: ServerStatus) -> float | None:
    connected = server.counted("Threads_connected")
    return None if connected is None else max(connected - 1.0, 0.0) / max(server.max_connections, 1.0)


SIGNAL = StatusSignal("connections", ("Threads_connected",), _share)
