"""What the worker records on its hot path: counters, job times, verdict flips, shadow verdicts,
unknown resources. Read back by ops' side (feedback/observe/), which this room never imports."""
