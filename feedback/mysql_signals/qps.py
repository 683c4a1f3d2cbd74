"""Statements per second (the server's `Questions`, per second of its own clock between probes)."""

from easeoff.feedback.mysql_signals import rate

SIGNAL = rate("qps", "Questions")
