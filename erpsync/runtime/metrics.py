"""Prometheus series, defined once here so every flow reports under the same names.

Scraped from `/metrics` of the health server (service issue). Labels are bounded sets only:
never a run id or a job name as a label value.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACTIONS = Counter(
    "erpsync_actions_total", "MM actions settled, by kind and outcome.", ["kind", "outcome"]
)
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
SOURCE_ROWS = Counter("erpsync_source_rows_total", "ERP rows read, by source kind.", ["kind"])
