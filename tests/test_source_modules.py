"""A source as one module (feedback/signals/sources/): its config table joins the signals' union
tagged by `source`, its settings reach the signal, and its reader is probed like a built-in
traffic source. The source here is defined in the test and registered as an app's would be."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from redis import Redis

from easeoff.feedback.config import Config, ConfigError, load_config, schema
from easeoff.feedback.config.schema import Signal
from easeoff.feedback.signals import sources
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.sources import Notes, Values, register, signal_of

READINGS: dict[str, float] = {}


class ToyTable(Signal, tag="toy", kw_only=True):
    traffic = True
    dial: str

    def settings(self, name: str, environ: Mapping[str, str]) -> dict[str, Any]:
        return {"options": {"dial": self.dial}}


class ToySource:
    def __init__(self, config: Config, redis: Redis) -> None:
        self.config = config

    def read(
        self, target: str, previous: Reading | None, context: Mapping[str, Reading | None]
    ) -> tuple[Values, Notes]:
        signal = signal_of(self.config, target)
        return {signal.name: READINGS[signal.options["dial"]]}, {}

    def release(self, target: str) -> None:
        pass


@pytest.fixture
def toy() -> Iterator[None]:
    register("toy", table=ToyTable)(ToySource)
    schema.file_type.cache_clear()
    yield
    sources._SOURCES.pop("toy")
    sources._TABLES.pop("toy")
    schema.file_type.cache_clear()


SIGNAL = '[signals.knob]\nsource = "toy"\ndial = "a"\nhigh = 10\nlow = 5\n'


def test_a_source_modules_table_is_read_and_its_signal_probed_as_traffic(
    toy: None, redis_conn: Redis, write_config
) -> None:  # type: ignore[no-untyped-def]
    config = load_config(write_config(extra=SIGNAL))
    knob = config.signals["knob"]
    assert knob.source == "toy" and knob.options == {"dial": "a"} and knob.is_global_traffic
    READINGS["a"] = 12.0
    reading = ReadingsCache(redis_conn, config).probe_now().get("toy:knob")
    assert reading is not None and reading.values["knob"] == 12.0 and reading.strained["knob"], reading


@pytest.mark.unit
def test_a_source_modules_table_refuses_what_it_does_not_take_in_one_line(toy: None, write_config) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"signals\.knob") as bad:
        load_config(write_config(extra=SIGNAL.replace('dial = "a"', 'dial = "a"\nturns = 3')))
    assert "\n" not in str(bad.value)


@pytest.mark.unit
def test_without_the_source_its_kind_is_unknown(write_config) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"signals\.knob"):
        load_config(write_config(extra=SIGNAL))
