"""Prometheus series, defined once here so every flow reports under the same names.

Scraped from `/metrics` of the health server (service issue). Labels are bounded sets only:
never a run id or a job name as a label value.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACTIONS = Counter("erpsync_actions_total", "MM actions settled, by kind and outcome.", ["kind", "outcome"])
MM_REQUEST_SECONDS = Histogram(
    "erpsync_mm_request_seconds",
    "Latency of MachineMetrics API calls, by operation and status class.",
    ["operation", "status"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MM_RETRIES = Counter("erpsync_mm_retries_total", "MachineMetrics calls retried, by operation.", ["operation"])
CIRCUIT_OPEN = Gauge("erpsync_circuit_breaker_open", "1 while the MM circuit breaker is open.")
QUARANTINE_OPEN = Gauge("erpsync_quarantine_open", "Open quarantine entries.")
LAST_SUCCESS = Gauge(
    "erpsync_last_success_timestamp_seconds", "Unix time of the last successful cycle, by loop.", ["loop"]
)
CYCLES = Counter("erpsync_cycles_total", "Cycles run, by loop and outcome.", ["loop", "outcome"])
LEADER = Gauge("erpsync_leader", "1 while this instance holds the leader lease.")
WRITEBACK_WRITES = Counter(
    "erpsync_writeback_writes_total", "Count write-backs, by sink and outcome.", ["sink", "outcome"]
)
STOPS_HELD = Gauge(
    "erpsync_stops_held",
    "Vanished-run stops the last sync cycle held back (untrusted_snapshot or mass_vanish), by reason.",
    ["reason"],
)
SOURCE_ROWS = Counter("erpsync_source_rows_total", "ERP rows read, by source kind.", ["kind"])

# --- the long-running service (runtime/service.py, runtime/scheduler.py, runtime/leader.py) ---
# `loop` is the scheduled job's name: a small fixed set (sync, writeback, imports, retention).
FENCING_TOKEN = Gauge(
    "erpsync_fencing_token", "Fencing token of the lease term this instance leads; 0 while not leader."
)
LEASE_EVENTS = Counter(
    "erpsync_lease_events_total",
    "Leader lease transitions, by event (acquired, lost, released, error).",
    ["event"],
)
STATE_DB_UP = Gauge("erpsync_state_db_up", "1 when the last state-database call of the lease loop worked.")
JOB_RUNS = Counter(
    "erpsync_job_runs_total",
    "Scheduled job runs, by loop and outcome (ok, error, timeout, skipped, blocked).",
    ["loop", "outcome"],
)
JOB_SECONDS = Histogram(
    "erpsync_job_duration_seconds",
    "Wall time of scheduled job runs that finished (ok or error), by loop.",
    ["loop"],
    buckets=(0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 900),
)
JOBS_ABANDONED = Gauge(
    "erpsync_jobs_abandoned", "Timed-out job runs whose thread is still alive, by loop.", ["loop"]
)
SCHEDULER_EVENTS = Counter(
    "erpsync_scheduler_events_total",
    "APScheduler events, by loop and event (error, missed, max_instances).",
    ["loop", "event"],
)
AUDIT_PURGED = Counter("erpsync_audit_purged_total", "Audit rows removed by the retention purge.")
