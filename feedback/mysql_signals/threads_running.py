"""Threads running now, the probe's own left out: work the server is doing at once (CPU and
lock contention), the signal Vitess's and freno's throttlers hold on by default."""

from easeoff.feedback.mysql_signals import gauge

SIGNAL = gauge("threads_running", "Threads_running", own=1.0)
