"""Levers as modules (feedback/levers/lever.py): a lever's options are taken by `@heavy_task`
and checked by its types, its table by the config, its check runs at its place in the
admission pipeline, and what it counted is given back when a later check refuses the job."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from redis import Redis

from easeoff.feedback.config import ConfigError, load_config
from easeoff.feedback.levers import lever as lever_module
from easeoff.feedback.levers.lever import Claim, levers, settings_for, task_options
from easeoff.feedback.reasons import Kind, Reason, Verdict
from easeoff.tasks.registry import TaskError, heavy_task
from easeoff.workers.checks import ConcurrencySlots, LeverModuleCheck, RateLimits, admission_checks, admit


class HoldOptions(msgspec.Struct, forbid_unknown_fields=True):
    hold_me: bool = False


class HoldSettings(msgspec.Struct, forbid_unknown_fields=True):
    why: str = "held by the test lever"


class HoldCheck:
    def __init__(self, settings: HoldSettings) -> None:
        self.settings = settings
        self.counted: list[str] = []

    def __call__(self, claim: Claim) -> Verdict | None:
        if claim.options.get("hold_me"):
            return Verdict(
                admit=False, reasons=(Reason(Kind.LEVER, f"task:{claim.task}", detail=self.settings.why, name="held"),)
            )
        self.counted.append(claim.execution)
        return None

    def give_back(self, claim: Claim) -> None:
        self.counted.remove(claim.execution)


class HoldLever:
    name = "hold"
    order = 450  # after the rates, before the slots
    options = HoldOptions
    settings = HoldSettings

    def __init__(self) -> None:
        self.checks: list[HoldCheck] = []

    def check(self, redis: Redis, settings: Any) -> HoldCheck:
        self.checks.append(HoldCheck(settings))
        return self.checks[-1]

    def families(self, redis: Redis, settings: Any, now: float) -> list[Any]:
        return []

    def command(self) -> None:
        return None


@pytest.fixture
def hold() -> Iterator[HoldLever]:
    lever = HoldLever()
    lever_module.register(lever)
    yield lever
    lever_module._REGISTERED.remove(lever)


@pytest.mark.unit
def test_heavy_task_takes_a_levers_option_typed_and_refuses_one_no_lever_declares(hold: HoldLever) -> None:
    assert task_options({"hold_me": True}) == {"hold_me": True}

    @heavy_task(queue="heavy", hold_me=True)
    def held_task() -> None: ...

    assert held_task.job_meta((), {}).lever_options == {"hold_me": True}
    with pytest.raises(TaskError, match=r"unknown option 'hold_mee' \(lever options: .*hold_me"):
        heavy_task(queue="heavy", hold_mee=True)
    with pytest.raises(TaskError, match="hold option: Expected `bool`"):
        heavy_task(queue="heavy", hold_me="yes")


@pytest.mark.unit
def test_a_levers_table_is_read_by_its_settings_type_and_a_bad_one_is_one_line(hold: HoldLever, write_config) -> None:  # type: ignore[no-untyped-def]
    config = load_config(write_config(extra='[levers.hold]\nwhy = "maintenance"\n'))
    assert settings_for(config)["hold"] == HoldSettings("maintenance")
    assert settings_for(load_config(write_config()))["hold"] == HoldSettings()  # its defaults
    with pytest.raises(ConfigError, match=r"levers\.hold: Expected `str`, got `int`") as bad:
        settings_for(load_config(write_config(extra="[levers.hold]\nwhy = 5\n")))
    assert "\n" not in str(bad.value)
    with pytest.raises(ConfigError, match=r"levers\.nobody: no lever of that name"):
        settings_for(load_config(write_config(extra="[levers.nobody]\nx = 1\n")))


def test_a_levers_check_runs_at_its_place_and_gives_back_when_a_later_check_refuses(
    hold: HoldLever, redis_conn: Redis, write_config
) -> None:  # type: ignore[no-untyped-def]
    config = load_config(write_config())
    checks = admission_checks(config, redis_conn, None, random.Random(1), None, None)  # type: ignore[arg-type]
    at = next(i for i, c in enumerate(checks) if isinstance(c, LeverModuleCheck) and c.check is hold.checks[-1])
    assert isinstance(checks[at - 1], RateLimits | LeverModuleCheck) and isinstance(checks[at + 1], ConcurrencySlots)
    assert any(isinstance(c, RateLimits) for c in checks[:at])
    assert hold in levers()

    class Refuses:
        def __call__(self, candidate: Any) -> Verdict:
            return Verdict(admit=False, reasons=(Reason(Kind.LEVER, "x", name="full"),))

    class Candidate:  # what claim_of reads
        job = type("J", (), {"id": "j1"})()
        queue = type("Q", (), {"name": "heavy"})()
        meta = type("M", (), {"task": "t", "resources": (), "lever_options": {}})()
        lease_member = "exec-1"
        now = 1.0

    lever_check = checks[at]
    verdict = admit([lever_check, Refuses()], Candidate())  # type: ignore[list-item, arg-type]
    assert not verdict.admit and hold.checks[-1].counted == []  # counted, then given back
    assert admit([lever_check], Candidate()).admit and hold.checks[-1].counted == ["exec-1"]  # type: ignore[arg-type]
