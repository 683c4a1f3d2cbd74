"""The Lua scripts that move jobs (workers/lua/), loaded once, and the arguments they share:
where rq and easeoff keep jobs, parked jobs and cool-downs (workers/moves.py calls them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rq.defaults import RQ_KEY_PREFIX
from rq.job import Job
from rq.queue import Queue
from rq.registry import ScheduledJobRegistry

from easeoff.feedback import clock, liveness
from easeoff.feedback import keys as redis_keys
from easeoff.feedback.lua import LuaScript

PACKAGE = "easeoff.workers"  # the scripts live in workers/lua/
PARKING = ("parking",)  # the helper promote, release and release_slots share
PARKING_PREFIXES = ("job_prefix", "cooldown_prefix", "parked_prefix", "task_prefix")
FLEET_CLOCK = ("easeoff.feedback:fleet_clock",)  # fleet_now, note_fleet, absence_judgeable
CLAIM = LuaScript.load(
    PACKAGE,
    "claim",
    argv=(
        "worker_name",
        "exec_id",
        "ttl",
        "now_text",
        "job_prefix",
        "execution_prefix",
        "executions_prefix",
        "worker_executions_key",
        "owner_prefix",
        "gap",
        "grace",
        "lapses_field",
    ),
    preludes=FLEET_CLOCK,
)
HEARTBEAT = LuaScript.load(
    PACKAGE,
    "heartbeat",
    argv=("owner", "composite", "exec_id", "ttl", "now_text", "lease_member", "gap", "grace"),
    preludes=FLEET_CLOCK,
)
DEFER = LuaScript.load(
    PACKAGE,
    "defer",
    argv=("composite", "exec_id", "job_id", "due", "meta", "parked_member", "owner", "lapses_field", "restart_ttl"),
)
PROMOTE = LuaScript.load(PACKAGE, "promote", argv=("now", "most", *PARKING_PREFIXES), preludes=PARKING)
RELEASE = LuaScript.load(
    PACKAGE, "release", argv=("now", *PARKING_PREFIXES, "scheduled_prefix", "queue_prefix"), preludes=PARKING
)
RELEASE_SLOTS = LuaScript.load(
    PACKAGE,
    "release_slots",
    argv=(
        "now",
        *PARKING_PREFIXES,
        "scheduled_prefix",
        "queue_prefix",
        "leases_prefix",
        "limit_prefix",
        "slot_prefix",
        "slot_low_prefix",
        "share_prefix",
        "class_park_prefix",
        "pace_prefix",
        "handed_prefix",
        "next_due_key",
        "pace_lead",
    ),
    preludes=(*PARKING, "easeoff.feedback:share"),
)
RECOVER = LuaScript.load(
    PACKAGE,
    "recover",
    argv=(
        "cutoff",
        "job_prefix",
        "execution_prefix",
        "executions_prefix",
        "failed_ttl",
        "reason",
        "most",
        "poison_reason",
        "most_requeues",
        "abandoned_field",
        "owner_prefix",
        "gap",
        "grace",
    ),
    preludes=FLEET_CLOCK,
)
FAIL_CLAIMED = LuaScript.load(PACKAGE, "fail_claimed", argv=("composite", "job_id", "expires_at", "reason", "owner"))


def silence_args(grace: float = liveness.GRACE) -> dict[str, Any]:
    """How long a silence of Redis counts as an outage, and how long absence is not judged after one."""
    return {"gap": liveness.SILENCE_GAP, "grace": grace}


def parking_prefixes() -> dict[str, str]:
    """Where parking.lua finds a job, its cool-downs and its parked indexes."""
    return {
        "job_prefix": Job.redis_job_namespace_prefix,
        "cooldown_prefix": redis_keys.COOLDOWN_PREFIX,
        "parked_prefix": redis_keys.PARKED_PREFIX,
        "task_prefix": redis_keys.TASK_SCOPE_PREFIX,
    }


def release_args(now: float | None) -> dict[str, str]:
    """What release and release_slots need to move parked jobs back to their queues."""
    return {
        "now": repr(clock.now() if now is None else now),
        **parking_prefixes(),
        "scheduled_prefix": ScheduledJobRegistry.key_template.format(""),
        "queue_prefix": Queue.redis_queue_namespace_prefix,
    }


OWNER_PREFIX = redis_keys.owner_key("")
EXECUTION_PREFIX = f"{RQ_KEY_PREFIX}:execution:"  # rq's Execution.key, without the composite id


def utc_at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
