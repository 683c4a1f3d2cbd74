"""The app source: requests per second the app counted itself (`easeoff.count_request`).

A counter key holding something that is not a count (another program wrote it) is a failed
probe that says so, never a crash of the probe loop nor a healthy 0."""

from __future__ import annotations

from collections.abc import Mapping

from redis import Redis

from easeoff.feedback.config import Config
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.sources import Notes, ProbeError, Values, register, signal_of
from easeoff.feedback.signals.traffic import app_rate


@register("app")
class AppSource:
    def __init__(self, config: Config, redis: Redis) -> None:
        self.config = config
        self.redis = redis

    def read(
        self, target: str, previous: Reading | None, context: Mapping[str, Reading | None]
    ) -> tuple[Values, Notes]:
        signal = signal_of(self.config, target)
        counter = signal.counter or signal.name
        try:
            return {signal.name: app_rate(self.redis, counter)}, {}
        except ValueError:
            raise ProbeError(f"app: counter {counter} holds something that is not a count (not a number)") from None

    def release(self, target: str) -> None:
        """Nothing is kept per target."""
