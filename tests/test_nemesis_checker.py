"""The nemesis run's checker (scripts/faults/checker.py) on synthetic histories: each metric catches
exactly its own violation, and a clean history, faults and all, has none."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from tests.sandbox_support import SCRIPTS

pytestmark = pytest.mark.unit


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"easeoff_faults_{name}", SCRIPTS / "faults" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


c = _load("checker")
S1, LIMITED = ("shard:1",), ("shard:3", "task:span_limited")


def job(job_id: str, task: str = "span_once", scopes: tuple[str, ...] = S1, **kw: bool):  # type: ignore[no-untyped-def]
    return c.Job(job_id, task, scopes=scopes, **kw)


def run(job_id: str, start: float, end: float | None, pid: int = 100) -> list:  # type: ignore[type-arg]
    events = [c.Event(job_id, "start", start, pid)]
    return events + ([c.Event(job_id, "end", end, pid)] if end is not None else [])


def history(jobs, events, places=None, **kw):  # type: ignore[no-untyped-def]
    jobs = {j.id: j for j in jobs}
    places = places if places is not None else {j: frozenset({"finished"}) for j in jobs}
    return c.History(jobs=jobs, events=events, places=places, **kw)


def only(report, metric: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The job ids of `metric`'s violations, after checking no other metric found anything."""
    others = {m: n for m, n in report.counts.items() if m != metric and n}
    assert not others, (others, report.violations)
    return [v.job_id for v in report.violations if v.metric == metric]


def test_a_clean_history_with_faults_survived_has_no_violation() -> None:
    jobs = [
        job("a"),
        job("b", "span_idempotent", idempotent=True),  # rerun after its worker died: allowed
        job("c", "span_chunks", resumable=True),  # resumed: allowed
        job("d", "span_limited", LIMITED),
        job("e", "span_limited", LIMITED),
        job("f"),  # failed with a reason
        job("g"),  # still deferred at the end
    ]
    events = run("a", 1, 2) + run("b", 1, None, pid=1) + run("b", 5, 6, pid=2) + run("c", 1, None, pid=3)
    events += run("c", 4, 7, pid=4) + run("d", 10, 12) + run("e", 12, 13, pid=5)
    places = {j.id: frozenset({"finished"}) for j in jobs}
    places["f"], places["g"] = frozenset({"failed"}), frozenset({"scheduled"})
    report = c.check(
        history(
            jobs,
            events,
            places,
            failure_reasons={"f": "easeoff: abandoned: worker died"},
            chunk_rows={("c", "chunk:1"): 1, ("c", "chunk:2"): 1},
            limits={"task:span_limited": 1, "shard:3": 1},
            rates={"task:span_limited": (1, 2.0)},
            windows=[c.Window("shard:1", "strain", 20, 30), c.Window("shard:1", "pause", 0.5, 3)],  # a, b: in grace
        )
    )
    assert report.total == 0, report.violations
    assert report.pending == ["g"]
    assert report.lines()[-1] == "nemesis_violations 0"
    assert [line.split()[0] for line in report.lines()] == [f"nemesis_{m}" for m in c.METRICS] + ["nemesis_violations"]


def test_lost_jobs_are_those_nowhere_finished_without_an_end_or_failed_without_a_reason() -> None:
    jobs = [job("gone"), job("no-end"), job("no-reason"), job("ok")]
    places = {"no-end": frozenset({"finished"}), "no-reason": frozenset({"failed"}), "ok": frozenset({"finished"})}
    report = c.check(history(jobs, run("no-end", 1, None) + run("ok", 1, 2), places))
    assert sorted(only(report, "lost")) == ["gone", "no-end", "no-reason"]
    assert report.lines()[0] == "nemesis_lost 3" and report.lines()[-1] == "nemesis_violations 3"


def test_a_non_idempotent_job_started_twice_is_a_duplicate_even_one_after_the_other() -> None:
    jobs = [job("once"), job("idem", "span_idempotent", idempotent=True), job("res", "span_chunks", resumable=True)]
    events = run("once", 1, 2, pid=1) + run("once", 5, 6, pid=2)
    events += run("idem", 1, 2, pid=3) + run("idem", 5, 6, pid=4) + run("res", 1, None, pid=5) + run("res", 5, 6)
    report = c.check(history(jobs, events))
    assert only(report, "duplicate_runs") == ["once"]
    assert "started 2 times" in report.violations[0].evidence


def test_any_job_running_twice_at_once_is_a_duplicate_even_an_idempotent_one() -> None:
    jobs = [job("idem", "span_idempotent", idempotent=True), job("killed", "span_chunks", resumable=True)]
    events = run("idem", 1, 5, pid=1) + run("idem", 3, 6, pid=2)
    # no end for the first run: its start is the last the ledger saw of it, and the second began after
    events += run("killed", 1, None, pid=3) + run("killed", 2, 3, pid=4)
    report = c.check(history(jobs, events))
    assert only(report, "duplicate_runs") == ["idem"]
    assert "ran twice at once" in report.violations[0].evidence


def test_a_resumable_job_that_applied_a_chunk_twice_is_a_duplicate() -> None:
    jobs = [job("res", "span_chunks", resumable=True), job("fine", "span_chunks", resumable=True)]
    rows = {("res", "chunk:1"): 1, ("res", "chunk:2"): 2, ("fine", "chunk:1"): 1}
    report = c.check(history(jobs, run("res", 1, 2) + run("fine", 1, 2), chunk_rows=rows))
    assert only(report, "duplicate_runs") == ["res"]
    assert "chunk:2 x2" in report.violations[0].evidence


def test_a_job_in_two_registries_is_double_placed() -> None:
    jobs = [job("both"), job("one")]
    places = {"both": frozenset({"finished", "failed"}), "one": frozenset({"finished"})}
    report = c.check(history(jobs, run("both", 1, 2) + run("one", 1, 2), places, failure_reasons={"both": "x"}))
    assert only(report, "double_placed") == ["both"]


def test_limit_excess_counts_the_seconds_above_the_limit_per_scope() -> None:
    jobs = [job(j, "span_limited", LIMITED) for j in "abcd"]
    # limit 2 on the task: a, b, c overlap from 2 to 3 (1 s), then d with b and c from 4 to 4.5 (0.5 s)
    events = run("a", 0, 3, 1) + run("b", 1, 4.5, 2) + run("c", 2, 6, 3) + run("d", 4, 7, 4)
    report = c.check(history(jobs, events, limits={"task:span_limited": 2, "shard:3": 4}))
    assert only(report, "limit_excess_s") == ["c", "d"]
    assert report.counts["limit_excess_s"] == 1.5
    assert report.lines()[3] == "nemesis_limit_excess_s 1.500"
    assert report.lines()[-1] == "nemesis_violations 1.500"


def test_runs_that_touch_end_to_start_and_killed_runs_with_no_end_hold_no_excess() -> None:
    jobs = [job(j, "span_limited", LIMITED) for j in "abc"]
    events = run("a", 0, 1, 1) + run("b", 1, 2, 2) + run("c", 1.5, None, 3)
    places = {"a": frozenset({"finished"}), "b": frozenset({"finished"}), "c": frozenset({"failed"})}
    report = c.check(
        history(jobs, events, places, failure_reasons={"c": "horse killed"}, limits={"task:span_limited": 1})
    )
    assert report.total == 0, report.violations


def test_rate_excess_counts_each_start_beyond_the_rate_in_a_window_less_the_slack() -> None:
    jobs = [job(j, "span_limited", LIMITED) for j in "abcde"]
    # 2 per 4 s, slack 0.5: windows of 3.5 s. a, b, c within 3 s: c is one too many. d at 3.6 after b
    # (2.6 s) is the second of b..d since a fell out (3.6 s ago), e at 7.2 is fine.
    events = run("a", 0, 0.1, 1) + run("b", 1, 1.1, 2) + run("c", 3, 3.1, 3) + run("d", 3.6, 4, 4)
    events += run("e", 7.2, 8, 5)
    report = c.check(history(jobs, events, rates={"task:span_limited": (2, 4.0)}))
    assert only(report, "rate_excess") == ["c", "d"]  # d: b, c, d within 3.5 s
    assert c.check(history(jobs, events, rates={"task:span_limited": (3, 4.0)})).total == 0


def test_ungated_starts_are_those_past_the_grace_before_the_lift_on_the_window_scope() -> None:
    jobs = [job("early"), job("late"), job("after"), job("elsewhere", scopes=("shard:2",)), job("task", "t", ("x",))]
    events = run("early", 11.5, 12) + run("late", 12.5, 13) + run("after", 20.5, 21) + run("elsewhere", 15, 16)
    events += run("task", 15, 16)
    windows = [c.Window("shard:1", "strain", 10, 20), c.Window("shard:1", "pause", 11, 19)]  # overlapping: once
    report = c.check(history(jobs, events, windows=windows, probe_interval=1.0))
    assert only(report, "ungated_starts") == ["late"]
    assert "2.50s after strain of shard:1" in report.violations[0].evidence


def test_spans_pair_each_end_with_its_own_executions_start() -> None:
    events = run("a", 1, None, pid=1) + run("a", 2, 3, pid=2)
    got = c.spans(events)["a"]
    assert [(s.pid, s.start, s.end) for s in got] == [(1, 1, None), (2, 2, 3)]
