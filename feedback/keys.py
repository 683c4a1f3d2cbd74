"""Every Redis key easeoff owns, in one place: the names, and what each holds.

rq's own keys (queues, registries, jobs, executions) are rq's: easeoff reaches them through
rq's classes (`Queue.key`, `StartedJobRegistry(...).key`, `Job.key_for`), never by spelling
them. The Lua scripts get these prefixes as arguments (feedback/lua.py). docs/ARCHITECTURE.md
lists which module and script owns each key.
"""

from __future__ import annotations

NAMESPACE = "easeoff:"

# Readings, single-flight (feedback/signals/cache.py)
READING = NAMESPACE + "reading:{host}"  # JSON Reading of one probe target, with its hysteresis state
PROBE_LOCK = NAMESPACE + "probe-lock:{host}"  # who probes this host: a lease its prober renews per reading
WAKE = NAMESPACE + "wake"  # pub/sub: a reading changed a verdict, or jobs came back to a queue: look again
# Set (PX probe.dormant_after) by each check of a job on the resource: its hosts are probed at full pace
WANTED = NAMESPACE + "wanted:{resource}"

# Cool-downs and parking (feedback/verdict/cooldown.py; workers/lua/parking.lua)
COOLDOWN_PREFIX = NAMESPACE + "cooldown:"  # + scope: set (with a TTL) while the scope is strained or paused
PARKED_PREFIX = NAMESPACE + "parked:"  # + scope: zset `job_id|queue` -> due, the deferred jobs waiting on it

# Scopes a job can wait on, besides its resources (`shard:3`)
TASK_SCOPE_PREFIX = "task:"  # a paused task's jobs park on `task:NAME`
SLOT_PARK_PREFIX = "slot:"  # a job refused a concurrency slot parks on `slot:SCOPE`
SLOT_LOW_PARK_PREFIX = "slot-low:"  # ... or, from a low-priority queue, on `slot-low:SCOPE`
SLOT_CLASS_PARK_PREFIX = "slot-class:"  # ... and, from a normal one, on `slot-class:SCOPE|TASK` too (its task's turn)

# Deferred jobs (workers/lua/defer.lua, promote.lua)
NEXT_DUE = NAMESPACE + "next-due"  # the earliest due time in the scheduled registries: promotion skips rounds before it

# Concurrency limits (feedback/levers/limits.py; feedback/lua/acquire.lua, workers/lua/release_slots.lua)
LEASES_PREFIX = NAMESPACE + "leases:"  # + scope: zset execution -> lease expiry
LIMIT_PREFIX = NAMESPACE + "limit:"  # + scope: the adaptive limit now (AIMD)
SLOT_WAITS = NAMESPACE + "slot-waits"  # hash scope -> default limit, for every scope that refused a slot
# + scope: hash task -> `pass seen handed weight`, the tasks' turns at its slots (feedback/lua/share.lua)
SHARE_PREFIX = NAMESPACE + "share:"

# Budgets (feedback/budget/measure.py, budget_observe.lua: measuring; fleet.py, budget_step.lua: control)
WORK_PREFIX = NAMESPACE + "work:"  # + resource: INCR by the budget controller each time heavy work on it ends
BUDGET_PREFIX = NAMESPACE + "budget:"  # + resource: hash; measuring: `observed`, `baseline`, `weight`, `learned_at`,
# `learned_ms`, `quiet_since`, `work_seen`, `work_done` (feedback/lua/budget_observe.lua)
# ... controlling: `controller` (JSON ControllerState), `version`, `step`, and `last` (JSON LastStep, what
# operators see: feedback/budget/state.py) (feedback/lua/budget_step.lua)
DUTY_PREFIX = NAMESPACE + "duty:"  # + resource: the duty cycle below one job at a time (absent at or above one)
PACE_PREFIX = NAMESPACE + "pace:"  # + resource: no new slot before this Redis time (feedback/lua/release_pace.lua)
PACE_HANDED_PREFIX = NAMESPACE + "pace-handed:"  # + resource: a job was handed the next paced start
LEASE_STARTED_PREFIX = NAMESPACE + "lease-started:"  # + `scope|execution`: when a paced lease was taken

# Ops' levers (feedback/levers/switches.py, feedback/levers/hosts_out.py)
SWITCHES = NAMESPACE + "switches"  # JSON: every pause, throttle and threshold override
HOSTS_OUT = NAMESPACE + "hosts-out"  # hash host -> why it is out of production

# What ops see (feedback/levers/events.py, flips.py, counters.py, history.py, unknown_resources.py)
EVENTS = NAMESPACE + "events"  # stream: switches, hosts, annotations, verdict flips, water marks
EVENT_COUNTS = NAMESPACE + "events:counts"  # hash kind -> events ever written
VERDICTS = NAMESPACE + "verdicts"  # JSON scope -> "held" | "admit", as last logged
COUNTERS = NAMESPACE + "counters:{kind}"  # hash `queue|task|reason` -> jobs started, finished, ...
HISTORY = NAMESPACE + "history"  # list of samples for the page, trimmed to six hours
HISTORY_TICK = NAMESPACE + "history:tick"  # SET NX PX: which exporter samples this period
UNKNOWN_RESOURCES = NAMESPACE + "unknown-resources"  # hash resource -> last sighting of a job naming it

# Shadow verdicts (feedback/tally/shadow_tally.py): `resource|signal` -> jobs a shadow policy would have deferred
SHADOW_MINUTE = NAMESPACE + "shadow:minute:{minute}"  # hash, one a minute, kept two hours
SHADOW_TOTAL = NAMESPACE + "shadow:total"  # hash: ever (the exporter's counter)
SHADOW_LAST = NAMESPACE + "shadow:last"  # hash -> JSON {"at", "reason"}: the latest would-be deferral

# Schedules (workers/scheduler.py): + name: hash `last_tick` (ms; only grows: the compare-and-set that makes
# each tick enqueue once), `last_job`, `last_at`, `last_missed`, `runs`, `missed`, `since`, `last_error`
SCHEDULE_PREFIX = NAMESPACE + "schedule:"

# Traffic (feedback/signals/traffic.py)
TRAFFIC = NAMESPACE + "traffic:{counter}:{second}"  # requests the app counted in one second

# Fenced executions (workers/fencing.py; workers/lua/claim.lua, heartbeat.lua, recover.lua, defer.lua)
FENCE = NAMESPACE + "fence"  # INCR: the fleet's fencing numbers, one per claim
OWNER = NAMESPACE + "owner:{job_id}"  # `token:execution` of the one execution that owns the job now
CLAIM_RECEIPT_PREFIX = NAMESPACE + "claim:"  # + execution: what that claim popped, for a claim sent twice
FLEET_SEEN = NAMESPACE + "fleet-seen"  # Redis time of the fleet's last heartbeat, claim or sweep
SWEEP_AFTER = NAMESPACE + "sweep-after"  # no sweep, no lapsed lease purged before this Redis time

# Running jobs (tasks/checkpoint.py)
STOP_AT_CHECKPOINT = NAMESPACE + "stop-at-checkpoint:{job_id}"  # why a running job should stop at its checkpoint
CANCEL_AT_CHECKPOINT = NAMESPACE + "cancel-at-checkpoint:{job_id}"  # `easeoff cancel` asked the job to end there


def reading_key(host: str) -> str:
    return READING.format(host=host)


def cooldown_key(scope: str) -> str:
    return COOLDOWN_PREFIX + scope


def parked_key(scope: str) -> str:
    return PARKED_PREFIX + scope


def leases_key(scope: str) -> str:
    return LEASES_PREFIX + scope


def limit_key(scope: str) -> str:
    return LIMIT_PREFIX + scope


def share_key(scope: str) -> str:
    return SHARE_PREFIX + scope


def slot_class_park_scope(scope: str, task: str) -> str:
    """Where a job of `task` refused a slot of `scope` waits for its task's turn (`slot-class:shard:3|backfill`)."""
    return f"{SLOT_CLASS_PARK_PREFIX}{scope}|{task}"


def work_key(resource: str) -> str:
    return WORK_PREFIX + resource


def budget_key(resource: str) -> str:
    return BUDGET_PREFIX + resource


def duty_key(resource: str) -> str:
    return DUTY_PREFIX + resource


def pace_key(resource: str) -> str:
    return PACE_PREFIX + resource


def pace_handed_key(resource: str) -> str:
    """Set while one waiting job has been handed the paced resource's next start (release_slots.lua)."""
    return PACE_HANDED_PREFIX + resource


def lease_started_key(scope: str, member: str) -> str:
    return f"{LEASE_STARTED_PREFIX}{scope}|{member}"


def counter_key(kind: str) -> str:
    return COUNTERS.format(kind=kind)


def owner_key(job_id: str) -> str:
    return OWNER.format(job_id=job_id)


def schedule_key(name: str) -> str:
    return SCHEDULE_PREFIX + name


def parked_member(job_id: str, queue: str) -> str:
    """A parked-index member, `job_id|queue`, as the Lua scripts that move parked jobs read it
    (workers/lua/parking.lua's promote_member): split at the first `|` (rq refuses a job id with one)."""
    return f"{job_id}|{queue}"
