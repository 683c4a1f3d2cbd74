"""A reading's typed fields, and a reading stored by the release before them read into them:
readings in Redis outlive a deploy by a few intervals, and one that could not be read would
fail closed and hold the whole fleet for the deploy."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from easeoff.feedback.config import parse_config
from easeoff.feedback.mysql_signals import ServerStatus, rate
from easeoff.feedback.signals.hysteresis import ShadowThresholds
from easeoff.feedback.signals.reading_taker import ReadingTaker, changes_a_verdict
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.sources import Probed
from easeoff.feedback.verdict.gate import signal_findings

pytestmark = pytest.mark.unit

HOSTS = '[mysql.hosts.r1]\nurl = "mysql://root@127.0.0.1:3306"\n[resources."s"]\nprimary = "r1"\n'
CONFIG = parse_config(
    HOSTS + "[signals.lag]\nhigh = 6.0\nlow = 1.0\npredict = 10\n[signals.connections]\nhigh = 0.9\nlow = 0.7\n",
    "readings.toml",
    {},
)
SHADOW = ShadowThresholds(
    parse_config(
        HOSTS + "[signals.lag]\nhigh = 6.0\nlow = 1.0\npredict = 10\n[signals.connections]\nhigh = 0.5\nlow = 0.4\n",
        "shadow.toml",
        {},
    ),
    frozenset({"connections"}),
)

# As the release before typed fields stored it: bookkeeping as `_NAME` and a prediction as
# `_eta:NAME` among the values, the shadow band as `shadow:NAME` among the strained.
OLD = (
    '{"host":"r1","taken_at":100.0,'
    '"values":{"lag":3.5,"connections":0.45,"_clock":100.0,"_server_id":7.0,"_heartbeat_at":99.5,'
    '"_questions":300.0,"_probe_s":0.002,"_budget_latency@0.99/60s":0.004,"_eta:lag":4.0},'
    '"strained":{"lag":true,"connections":false,"shadow:connections":true},'
    '"notes":{"lag":"from Seconds_Behind_Master (no heartbeat row)"}}'
)


def test_a_reading_stored_before_typed_fields_is_read_into_them() -> None:
    reading = Reading.from_json(OLD)
    assert reading.values == {"lag": 3.5, "connections": 0.45}
    assert reading.counters == {
        "clock": 100.0,
        "server_id": 7.0,
        "heartbeat_at": 99.5,
        "questions": 300.0,
        "probe_s": 0.002,
        "budget_latency@0.99/60s": 0.004,
    }
    assert reading.predictions == {"lag": 4.0}
    assert reading.strained == {"lag": True, "connections": False}
    assert reading.shadow_strained == {"connections": True}
    assert reading.notes == {"lag": "from Seconds_Behind_Master (no heartbeat row)"}
    assert (reading.host, reading.taken_at, reading.error, reading.dormant) == ("r1", 100.0, None, False)


def test_a_new_reading_round_trips_and_leaves_its_empty_fields_out() -> None:
    full = Reading(
        host="r1",
        taken_at=1.5,
        values={"lag": 2.0},
        counters={"clock": 1.5},
        predictions={"lag": 8.0},
        strained={"lag": True},
        shadow_strained={"lag": False},
        notes={"lag": "n"},
        error="e",
        dormant=True,
    )
    assert Reading.from_json(full.to_json()) == full
    bare = Reading(host="app:web", taken_at=2.0, values={"web": 12.0})
    assert bare.to_json() == '{"host":"app:web","taken_at":2.0,"values":{"web":12.0}}'
    assert Reading.from_json(bare.to_json()) == bare


def test_a_rate_continues_from_an_old_readings_counters() -> None:
    previous = Reading.from_json(OLD).counters
    assert rate("q", "Questions").value(ServerStatus({"questions": 500.0}, 100, 102.0, previous)) == 100.0


def test_an_old_readings_prediction_is_judged_as_one() -> None:
    reading = Reading.from_json(OLD)
    found = signal_findings(CONFIG.signals["lag"], "r1", reading, CONFIG.thresholds("lag", "r1"))
    assert [(r.level, r.detail) for r in found.reasons] == [("predicted", "in 4.0s")]


class OneProbe:
    """A prober that reads what it is given (the taker needs only `read`)."""

    def __init__(self, probed: Probed) -> None:
        self.probed = probed

    def read(self, target: str, previous: Reading | None, context: Mapping[str, Reading | None]) -> Probed:
        return self.probed


def test_a_probe_continues_from_an_old_reading() -> None:
    """The old prediction has no band (lag is released), the old shadow band holds connections
    at 0.45 (inside 0.4..0.5) while the real one stays healthy, and the new reading's fields
    hold what the old shape prefixed."""
    probed = Probed(values={"lag": 3.0, "connections": 0.45}, counters={"clock": 110.0})
    taker = ReadingTaker(OneProbe(probed), clock=lambda: 110.0)  # type: ignore[arg-type]
    reading = taker.take("r1", Reading.from_json(OLD), {}, (CONFIG, SHADOW))
    assert reading.values == {"lag": 3.0, "connections": 0.45}
    assert reading.strained == {"lag": False, "connections": False}
    assert reading.shadow_strained == {"connections": True}
    assert reading.predictions == {}
    assert reading.counters["clock"] == 110.0 and reading.counters["probe_s"] >= 0.0
    assert all(not k.startswith(("_", "shadow:")) for k in [*reading.values, *reading.strained])


def test_a_shadow_band_flip_changes_a_verdict_and_a_prediction_alone_does_not() -> None:
    before = Reading(host="r1", taken_at=1.0, strained={"lag": True}, shadow_strained={"connections": False})
    flipped = Reading(host="r1", taken_at=2.0, strained={"lag": True}, shadow_strained={"connections": True})
    nearer = Reading(
        host="r1", taken_at=2.0, strained={"lag": True}, shadow_strained={"connections": False}, predictions={"lag": 3}
    )
    assert changes_a_verdict(before, flipped)
    assert not changes_a_verdict(before, nearer)
