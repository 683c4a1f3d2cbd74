"""The nemesis's seeded fault schedule (scripts/faults/schedule.py): replayable from its seed, a
subset keeps its faults' times, and faults of one family never overlap."""

from __future__ import annotations

import importlib.util
import itertools
import sys

import pytest

from tests.sandbox_support import SCRIPTS

pytestmark = pytest.mark.unit

_spec = importlib.util.spec_from_file_location("easeoff_faults_schedule", SCRIPTS / "faults" / "schedule.py")
assert _spec is not None and _spec.loader is not None
s = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = s  # dataclasses look their module up by name
_spec.loader.exec_module(s)


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    kinds = list(s.KINDS)
    assert s.make_schedule(5, kinds, 75, quick=True) == s.make_schedule(5, kinds, 75, quick=True)
    assert s.make_schedule(5, kinds, 75, quick=True) != s.make_schedule(6, kinds, 75, quick=True)


def test_every_kind_asked_for_is_scheduled_within_its_ranges() -> None:
    faults = s.make_schedule(2, list(s.KINDS), 75, quick=True)
    assert {f.kind for f in faults} == set(s.KINDS)
    for f in faults:
        low, high = s.KINDS[f.kind][2]
        assert low <= f.seconds <= high, f
        assert f.at >= s.WARMUP
    full = s.make_schedule(2, ["redis_stop", "worker_stop", "skew"], 480, quick=False)
    assert max(f.seconds for f in full if f.kind == "redis_stop") > 12  # the full run stalls up to 40 s
    assert all(5 <= abs(f.skew) <= 15 for f in full if f.kind == "skew")


def test_a_subset_replays_its_faults_at_the_times_the_full_schedule_had() -> None:
    full = s.make_schedule(9, list(s.KINDS), 75, quick=True)
    alone = s.make_schedule(9, ["worker_stop"], 75, quick=True)
    assert alone == [f for f in full if f.kind == "worker_stop"]


def test_faults_of_one_family_never_overlap() -> None:
    faults = s.make_schedule(4, list(s.KINDS), 480, quick=False)
    for family in ("redis", "mysql"):
        mine = [f for f in faults if f.family == family]
        assert len(mine) > 2
        for earlier, later in itertools.pairwise(mine):
            assert later.at >= earlier.at + earlier.holds, (earlier, later)


def test_unknown_fault_kinds_are_named() -> None:
    assert s.parse_kinds("all") == list(s.KINDS)
    assert s.parse_kinds("pause, redis_stop") == ["pause", "redis_stop"]
    with pytest.raises(ValueError, match="unknown fault kind reboot"):
        s.parse_kinds("pause,reboot")
