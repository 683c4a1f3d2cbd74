"""The Prometheus source: a traffic signal read with an instant query over Prometheus' HTTP API.

Fail closed: an empty result is no reading at all (the series is gone, the exporter down, the
query misspelled), never a quiet 0, so it is a probe error naming the query; a NaN or an
infinity (a rate over nothing, a division by zero) is this signal's failed read, noted with
what it was, so the gate holds on it and says so (`site_rps:prometheus nan (not a number)`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from redis import Redis

from easeoff.feedback.config import Config, SignalConfig
from easeoff.feedback.signals.hysteresis import not_a_number
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.sources import Notes, ProbeError, Values, register, signal_of


@register("prometheus")
class PrometheusSource:
    def __init__(self, config: Config, redis: Redis) -> None:
        self.config = config

    def read(
        self, target: str, previous: Reading | None, context: Mapping[str, Reading | None]
    ) -> tuple[Values, Notes]:
        signal = signal_of(self.config, target)
        value = prometheus_value(signal, self.config.probe_timeout)
        unjudgeable = not_a_number(value)
        if unjudgeable is not None:
            return {}, {signal.name: unjudgeable}
        return {signal.name: value}, {}

    def release(self, target: str) -> None:
        """Nothing is kept per target."""


def prometheus_value(signal: SignalConfig, timeout: float) -> float:
    """An instant query over Prometheus' HTTP API: a scalar, or a vector's samples summed. An
    empty vector raises ProbeError (no reading); NaN and infinities are returned as they are."""
    assert signal.url and signal.query
    return instant_query(signal.url, signal.query, timeout)


def instant_query(base_url: str, query: str, timeout: float) -> float:
    """`prometheus_value` for any query: also what a budget's Prometheus latency is read with."""
    url = base_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ProbeError(f"prometheus: {exc.__class__.__name__}") from None
    data = body.get("data", {}) if isinstance(body, dict) else {}
    if body.get("status") != "success":
        raise ProbeError(f"prometheus: {body.get('error', 'query failed')}"[:100])
    result: Any = data.get("result")
    if data.get("resultType") == "vector" and result == []:
        raise ProbeError(f"prometheus: no samples for {_short(query)}")
    try:
        if data.get("resultType") == "scalar":
            return float(result[1])
        if data.get("resultType") == "vector":
            return sum(float(sample["value"][1]) for sample in result)
    except (TypeError, ValueError, KeyError, IndexError):
        pass
    raise ProbeError("prometheus: result is not a number or vector")


def _short(query: str, limit: int = 80) -> str:
    """The query as a reason shows it: one line, cut to `limit` characters."""
    line = " ".join(query.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
