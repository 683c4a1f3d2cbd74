"""Run it or ease off: the gated rq worker and the `easeoff` CLI."""
