"""The Prometheus source: a traffic signal read with an instant query over Prometheus' HTTP API."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from redis import Redis

from easeoff.feedback.config import Config, SignalConfig
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
        return {signal.name: prometheus_value(signal, self.config.probe_timeout)}, {}

    def release(self, target: str) -> None:
        """Nothing is kept per target."""


def prometheus_value(signal: SignalConfig, timeout: float) -> float:
    """An instant query over Prometheus' HTTP API; an empty result reads 0."""
    assert signal.url and signal.query
    url = signal.url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": signal.query})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ProbeError(f"prometheus: {exc.__class__.__name__}") from None
    data = body.get("data", {}) if isinstance(body, dict) else {}
    if body.get("status") != "success":
        raise ProbeError(f"prometheus: {body.get('error', 'query failed')}"[:100])
    result: Any = data.get("result")
    try:
        if data.get("resultType") == "scalar":
            return float(result[1])
        if data.get("resultType") == "vector":
            return sum(float(sample["value"][1]) for sample in result)
    except (TypeError, ValueError, KeyError, IndexError):
        pass
    raise ProbeError("prometheus: result is not a number or vector")
