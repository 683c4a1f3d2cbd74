"""The names easeoff exports, in one place.

The exporter writes these series, `easeoff alerts rules` alerts on them and the Grafana
dashboard plots them: keeping the vocabulary in one module means a rename cannot leave
a rule or a panel querying a series that no longer exists.
"""

from __future__ import annotations

# Queues: every configured queue (and any other queue rq knows) is exported, 0 when empty.
QUEUE_READY = "easeoff_queue_ready_jobs"
QUEUE_DEFERRED = "easeoff_queue_deferred_jobs"
QUEUE_RUNNING = "easeoff_queue_running_jobs"
QUEUE_FAILED = "easeoff_queue_failed_jobs"
QUEUE_OLDEST_AGE = "easeoff_queue_oldest_job_age_seconds"
QUEUE_HELD = "easeoff_queue_held"

# Water marks: the configured marks, and the exporter's own evaluation of them.
WATERMARK = "easeoff_queue_watermark"
WATERMARK_ALERT = "easeoff_queue_watermark_alert"
WATERMARK_TRANSITIONS = "easeoff_queue_watermark_transitions"  # a counter: exposed with `_total`

# What each water-mark measure watches.
MEASURE_METRICS = {"depth": QUEUE_READY, "age": QUEUE_OLDEST_AGE}

# Fleet-wide job counters (feedback/tally/counters.py); the `_total` suffix is added on exposition.
JOBS = "easeoff_jobs_{kind}"
JOB_RUN = "easeoff_job_run_seconds"  # a histogram, by queue and task (feedback/tally/job_times.py)
JOB_QUEUE_WAIT = "easeoff_job_queue_wait_seconds"  # a histogram: enqueue to the start of the run that ended
WORKERS = "easeoff_workers"

# Readings, signals and verdicts.
SIGNAL_VALUE = "easeoff_signal_value"
SIGNAL_THRESHOLD = "easeoff_signal_threshold"
SIGNAL_STRAINED = "easeoff_signal_strained"
READING_AGE = "easeoff_reading_age_seconds"
PROBE_OK = "easeoff_probe_ok"
RESOURCE_HELD = "easeoff_resource_held"
RESOURCE_HOLD_REASONS = "easeoff_resource_hold_reasons"
RESOURCE_CRITICAL = "easeoff_resource_critical"
GLOBAL_HELD = "easeoff_global_held"

# Switches ops and the fleet turn: hosts out, cool-downs (with their parked jobs), limits.
HOST_OUT = "easeoff_host_out"
RESOURCE_COOLING = "easeoff_resource_cooling"
RESOURCE_PARKED = "easeoff_resource_parked_jobs"
CONCURRENCY_LIMIT = "easeoff_concurrency_limit"
CONCURRENCY_LEASES = "easeoff_concurrency_leases"
RATE_LIMIT = "easeoff_rate_limit_per_second"
RATE_WAITING = "easeoff_rate_waiting_jobs"
SWITCH_ACTIVE = "easeoff_switch_active"
SWITCH_THROTTLE_RATIO = "easeoff_switch_throttle_ratio"
SWITCH_EXPIRY = "easeoff_switch_expiry_timestamp_seconds"
SWITCH_AGE = "easeoff_switch_age_seconds"
SHADOW_SIGNAL = "easeoff_shadow_signal"
SHADOW_HOLDING = "easeoff_shadow_holding"
SHADOW_DEFERRALS = "easeoff_shadow_deferrals"  # a counter: exposed with _total
SHADOW_DEFERRALS_HOUR = "easeoff_shadow_deferrals_last_hour"
SWITCH_STALE_AFTER = "easeoff_switch_stale_after_seconds"
EVENTS = "easeoff_events"  # a counter: exposed as easeoff_events_total

# Budgets (feedback/budget/): per budgeted resource, what the controller saw and decided at its last step.
BUDGET_CEILING = "easeoff_budget_ceiling"  # by ceiling: the most allowed (latency, lag in s; undo backlog)
BUDGET_OBSERVED = "easeoff_budget_observed"  # by ceiling: the value the controller last saw
BUDGET_BASELINE = "easeoff_budget_baseline_seconds"
BUDGET_SLACK = "easeoff_budget_slack"
BUDGET_LEVEL = "easeoff_budget_level"
BUDGET_DUTY = "easeoff_budget_duty_cycle"
BUDGET_DECISION = "easeoff_budget_decision"  # by why: 1 for the last decision's reason, 0 for the others
BUDGET_STEP_AGE = "easeoff_budget_step_age_seconds"

# The exporter itself.
REDIS_UP = "easeoff_redis_up"
SCRAPE_DURATION = "easeoff_scrape_duration_seconds"
BUILD_INFO = "easeoff_build_info"  # 1, with the version as a label


def jobs_counter(kind: str) -> str:
    """`finished` → `easeoff_jobs_finished` (exposed as `easeoff_jobs_finished_total`)."""
    return JOBS.format(kind=kind)
