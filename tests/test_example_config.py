"""The config shipped in the package (what `easeoff config init` writes): pure, no servers."""

from __future__ import annotations

import importlib
import re

import pytest

from easeoff.feedback.config import load_config, packaged_example_path
from easeoff.feedback.observe.watermarks import INACTIVE, config_alarms, measures_of, step

pytestmark = pytest.mark.unit


def test_its_alerts_stay_quiet_on_an_idle_queue() -> None:
    """An empty queue (depth 0, and an age of 0) for a day sets off none of the example's water marks."""
    alarms = config_alarms(load_config(packaged_example_path()))
    assert alarms, "the example shows water marks"
    idle = measures_of(0, 0.0)
    for alarm in alarms:
        state = INACTIVE
        for now in range(0, 86400, 10):
            state = step(alarm, state, idle[alarm.measure], float(now))
            assert state.phase == "inactive", (alarm.alertname, now, state)


def test_its_high_marks_still_fire_on_a_backlog() -> None:
    alarms = {a.key: a for a in config_alarms(load_config(packaged_example_path()))}
    depth = alarms[("heavy", "depth", "high")]
    state = INACTIVE
    for now in range(0, 200, 10):
        state = step(depth, state, 20000.0, float(now))
    assert state.phase == "firing"


def test_every_function_it_names_exists() -> None:
    """A call the comments tell an app to make (`easeoff.count_request(...)`) resolves to a real function."""
    text = packaged_example_path().read_text(encoding="utf-8")
    calls = set(re.findall(r"\b((?:easeoff|feedback|tasks|workers)(?:\.\w+)+)\(", text))
    assert calls, "the example names the app-side call"
    for dotted in sorted(calls):
        module, _, name = dotted.rpartition(".")
        module = module if module.startswith("easeoff") else f"easeoff.{module}"
        assert callable(getattr(importlib.import_module(module), name, None)), dotted
