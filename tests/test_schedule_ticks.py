"""Schedules' ticks and parsing: pure, no servers (feedback/schedules.py, tasks/periodic.py)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from easeoff.feedback.config import ConfigError, parse_config
from easeoff.feedback.schedules import Schedule, due_tick, make_schedule, next_tick, ticks_between
from easeoff.tasks.periodic import declared_schedules, periodic
from easeoff.tasks.registry import TaskError, heavy_task

pytestmark = pytest.mark.unit

BASE = """
[redis]
url = "redis://127.0.0.1:6379/0"
[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"
[resources."shard:1"]
hosts = ["db1"]
[queues.heavy]
"""

NOW = st.floats(min_value=1.0e9, max_value=2.5e9, allow_nan=False)  # 2001 .. 2049
EVERY = st.sampled_from([1.0, 2.0, 1.5, 7.0, 60.0, 90.0, 3600.0, 5400.0, 86400.0, 604800.0])
CRONS = st.sampled_from(
    ["* * * * *", "*/5 * * * *", "0 2 * * *", "30 1 * * 0", "0 0 1 * *", "15 2,14 * * 1-5", "@hourly"]
)
ZONES = st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe"])  # DST, and a half-hour one


def parse(extra: str):
    return parse_config(BASE + extra, "test.toml", {})


@settings(max_examples=300, deadline=None)
@given(now=NOW, every=EVERY)
def test_interval_ticks_bracket_now_on_epoch_multiples(now: float, every: float) -> None:
    s = make_schedule("n", "t", every=every)
    due, following = due_tick(s, now), next_tick(s, now)
    now_ms = int(now * 1000)
    assert due <= now_ms < following
    assert following - due == round(every * 1000)
    assert due % round(every * 1000) == 0  # every scheduler finds the same ticks, unasked
    assert due_tick(s, due / 1000) == due  # a tick at now is due now, not a period ago


@settings(max_examples=150, deadline=None)
@given(now=NOW, expr=CRONS, zone=ZONES)
def test_cron_ticks_are_matches_with_none_between(now: float, expr: str, zone: str) -> None:
    s = make_schedule("c", "t", cron=expr, timezone=zone)
    due, following = due_tick(s, now), next_tick(s, now)
    assert due <= int(now * 1000) < following
    tz = ZoneInfo(zone)
    for tick in (due, following):
        assert tick % 60000 == 0
        assert croniter.match(expr, datetime.fromtimestamp(tick / 1000, tz))
    # the next match after `due` is `following`: no tick skipped between them
    assert round(croniter(expr, datetime.fromtimestamp(due / 1000, tz)).get_next(float) * 1000) == following
    assert due_tick(s, due / 1000) == due
    assert ticks_between(s, due, following) == 0


@settings(max_examples=200, deadline=None)
@given(a=NOW, b=NOW, every=EVERY)
def test_due_tick_never_goes_back_and_missed_ticks_count_what_lies_between(a: float, b: float, every: float) -> None:
    s = make_schedule("n", "t", every=every)
    early, late = sorted((a, b))
    first, last = due_tick(s, early), due_tick(s, late)
    assert first <= last
    between = ticks_between(s, first, last)
    assert between == max(0, (last - first) // round(every * 1000) - 1)
    assert ticks_between(s, last, first) == 0


def test_missed_cron_ticks_counted_across_a_dst_change() -> None:
    # Paris leaves summer time on 2026-10-25: 01:30 local every day of a week that spans it.
    s = make_schedule("c", "t", cron="30 1 * * *", timezone="Europe/Paris")
    start = due_tick(s, datetime(2026, 10, 21, 12, tzinfo=ZoneInfo("Europe/Paris")).timestamp())
    end = due_tick(s, datetime(2026, 10, 28, 12, tzinfo=ZoneInfo("Europe/Paris")).timestamp())
    assert ticks_between(s, start, end) == 6  # the 22nd to the 27th; the 21st and 28th are the ends
    assert datetime.fromtimestamp(end / 1000, ZoneInfo("Europe/Paris")).hour == 1


def test_config_schedules_parse_with_cron_or_every() -> None:
    config = parse(
        """
[schedules.nightly]
task = "archive_old_rows"
kwargs = { shard = 1 }
cron = "0 2 * * *"
timezone = "Europe/Paris"
[schedules.recount-often]
task = "recount_users"
args = [1]
every = "1h30m"
"""
    )
    nightly, often = config.schedules["nightly"], config.schedules["recount-often"]
    assert (nightly.task, nightly.kwargs, nightly.cron, nightly.timezone) == (
        "archive_old_rows",
        {"shard": 1},
        "0 2 * * *",
        "Europe/Paris",
    )
    assert (often.args, often.every, often.cron, often.when) == ((1,), 5400.0, None, "every 1h30m")
    assert parse("").schedules == {}


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ('task = "t"', "schedules.s", "either cron"),
        ('task = "t"\ncron = "* * * * *"\nevery = "1m"', "schedules.s", "only one"),
        ('cron = "* * * * *"', "schedules.s.task", "missing"),
        ('task = "t"\ncron = "61 * * * *"', "schedules.s.cron", "bad cron"),
        ('task = "t"\ncron = "*/2 * * * * *"', "schedules.s.cron", "five fields"),
        ('task = "t"\nevery = "2 parsecs"', "schedules.s.every", "bad duration"),
        ('task = "t"\nevery = "100ms"', "schedules.s.every", "at least 1s"),
        ('task = "t"\nevery = "1m"\ntimezone = "Europe/Paris"', "schedules.s.timezone", "only a cron"),
        ('task = "t"\ncron = "0 2 * * *"\ntimezone = "Mars/Olympus"', "schedules.s.timezone", "unknown timezone"),
        ('task = "t"\nevery = "1m"\nargs = "x"', "schedules.s.args", "list"),
        ('task = "t"\nevery = "1m"\nkwargs = [1]', "schedules.s.kwargs", "table"),
        ('task = "t"\nevery = "1m"\nat = "noon"', "schedules.s.at", "unknown key"),
    ],
)
def test_a_malformed_schedule_is_one_line_naming_its_key(table: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(f"[schedules.s]\n{table}\n")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"test.toml: {key}: "), message
    assert words in message


def test_a_schedule_name_must_fit_a_job_id() -> None:
    with pytest.raises(ConfigError, match=r"""schedules\."no good": name 'no good' must be"""):
        parse('[schedules."no good"]\ntask = "t"\nevery = "1m"\n')


def test_periodic_on_a_task_declares_a_checked_schedule() -> None:
    @periodic(every="2m", kwargs={"shard": 1})
    @heavy_task(queue="heavy", resources=lambda shard, **_: [f"shard:{shard}"], name="ticks_test_task")
    def ticks_test_task(shard: int) -> None: ...

    declared = declared_schedules()["ticks_test_task"]
    assert declared == Schedule("ticks_test_task", "ticks_test_task", (), {"shard": 1}, every=120.0, origin="task")
    with pytest.raises(TaskError, match="bad arguments"):
        periodic(every="2m", kwargs={"nope": 1}, name="other")(ticks_test_task)
    with pytest.raises(TaskError, match="bad cron"):
        periodic(cron="every day", name="other2")(ticks_test_task)
    with pytest.raises(TaskError, match="above @heavy_task"):
        periodic(every="1m")(lambda: None)  # type: ignore[arg-type]
