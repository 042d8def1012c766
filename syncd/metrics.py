"""Prometheus metrics, defined once so every module increments the same series.

Names follow Prometheus conventions (``syncd_..._total`` counters, ``_seconds`` units). Labels are
account names and route templates, never incident ids (unbounded cardinality) or credentials.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

VENDOR_REQUESTS = Counter(
    "syncd_vendor_requests_total",
    "HTTP requests made to vendor APIs.",
    ["account", "endpoint", "status"],
)
VENDOR_RATE_LIMITED = Counter(
    "syncd_vendor_rate_limited_total",
    "Vendor responses that signalled a rate limit (429, or the vendor's equivalent).",
    ["account", "endpoint"],
)
VENDOR_REQUEST_SECONDS = Histogram(
    "syncd_vendor_request_seconds",
    "Latency of vendor API requests.",
    ["account"],
)
MALFORMED = Counter(
    "syncd_malformed_responses_total",
    "Vendor responses or records that could not be parsed and were skipped.",
    ["account", "endpoint"],
)
POLLS = Counter("syncd_polls_total", "Completed incident polls.", ["account", "kind"])
POLLS_STRETCHED = Counter(
    "syncd_polls_stretched_total",
    "Polls put off to the next interval while the account's own pushes kept its budget short.",
    ["account"])
POLL_FAILURES = Counter("syncd_poll_failures_total", "Failed polls.", ["account", "error"])
CHANGES = Counter(
    "syncd_observed_changes_total", "Changes observed in a vendor.", ["account", "field"]
)
PUSHES = Counter("syncd_pushes_total", "Outbox actions pushed.", ["account", "action", "outcome"])
PUSH_FAILURES = Counter(
    "syncd_push_failures_total", "Failed push attempts.", ["account", "action", "error"]
)
OUTBOX_DEPTH = Gauge("syncd_outbox_depth", "Outbox actions by status.", ["status"])
OUTBOX_OLDEST = Gauge(
    "syncd_outbox_oldest_pending_seconds", "Age of the oldest pending outbox action."
)
PROPAGATION = Histogram(
    "syncd_propagation_delay_seconds",
    "From a change observed in one vendor to its confirmed push to another.",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
BUDGET_REMAINING = Gauge(
    "syncd_budget_remaining_requests", "Tokens left in a rate budget bucket.", ["account", "bucket"]
)
CONFLICTS = Counter(
    "syncd_conflicts_total", "Sync conflicts resolved by policy.", ["group", "field"]
)
ONCALL_DRIFT = Gauge(
    "syncd_oncall_drift", "1 when mapped schedules would page different people now.", ["mapping"]
)
LAST_POLL = Gauge(
    "syncd_last_poll_timestamp_seconds", "Unix time of the last successful poll.", ["account"]
)
WEBHOOKS = Counter(
    "syncd_webhooks_total", "Vendor webhook deliveries, by verification outcome.",
    ["account", "outcome"],
)
WEBHOOK_HINTS = Counter(
    "syncd_webhook_hints_total",
    "What verified webhook deliveries did to their account's poll: scheduled it, were coalesced "
    "into one already due, or were deferred to the regular schedule to keep budget for pushes.",
    ["account", "outcome"],
)
LEDGER_WRITABLE = Gauge(
    "syncd_ledger_writable",
    "1 while the ledger accepts writes; 0 while they fail (disk full, locked by another process).",
)
LEDGER_WRITE_FAILURES = Counter(
    "syncd_ledger_write_failures_total",
    "Ledger transactions that failed for an outside reason and were rolled back.",
    ["reason"],
)
LEADER = Gauge(
    "syncd_leader",
    "1 while this replica holds the lease and syncs (always 1 on a SQLite ledger); 0 on standby.",
)
