"""Runs erpsync will not journal, as quarantine records named by their ERP row.

The journal keeps each MM request body exactly, so a crash can be settled without the ERP; a body
over `PAYLOAD_MAX_BYTES` (a multi-megabyte description cell) cannot be kept (MariaDB's TEXT holds
64 KB), and MM would refuse it anyway. The sync cycle quarantines such a run with its other bad
rows, in the same transaction, and neither journals nor sends it.
"""

from __future__ import annotations

import json

from erpsync.domain.columns import TEXT_MAX_BYTES, utf8_size
from erpsync.domain.lifecycle import ActionKind, Intent
from erpsync.domain.model import BadRecord

PAYLOAD_MAX_BYTES = TEXT_MAX_BYTES


def origin_location(origin: str) -> tuple[str | None, int | None]:
    """An ERP row's origin as (file, line): ``orders.csv:12`` -> ("orders.csv", 12); another
    origin (a VISUAL operation, a table row) is kept whole as the file, without a line."""
    if not origin:
        return None, None
    head, sep, tail = origin.rpartition(":")
    if sep and head and tail.isdigit():
        return head, int(tail)
    return origin, None


def oversized(intent: Intent) -> BadRecord | None:
    """The quarantine record of an intent whose MM request body is too large to journal, or None.

    The journal keeps the exact body so a crash can be settled without the ERP; a body over
    `PAYLOAD_MAX_BYTES` (a multi-megabyte description cell) cannot be kept, and MM would refuse
    it anyway. Such a run is quarantined, named by its ERP row, and neither journaled nor sent.
    A job import is exempt (its size grows with the shop; on MariaDB it needs a wider column).
    """
    if intent.kind is ActionKind.IMPORT:
        return None  # the job file of a whole shop: large by nature, one action, never one row
    size = utf8_size(json.dumps(intent.payload, sort_keys=True, default=str))
    if size <= PAYLOAD_MAX_BYTES:
        return None
    ref = intent.ref
    file, line = origin_location(ref.origin if ref else "")
    what = f"{ref.job} op {ref.operation} on {ref.machine}" if ref else intent.idempotency_key
    return BadRecord(
        source=intent.source or "mm",
        record_key=ref.run_key if ref else intent.idempotency_key,
        reason=(
            f"run {what}: its MachineMetrics request is {size:,} bytes, over the limit of "
            f"{PAYLOAD_MAX_BYTES:,} bytes (a field such as the description is far too long); "
            "shorten the field in the ERP"
        ),
        error_class="request_too_large",
        file=file,
        line=line,
        raw=intent.payload,
        job=ref.job if ref else None,
        operation=ref.operation if ref else None,
        machine=ref.machine if ref else None,
        mm_run_id=ref.mm_run_id if ref else None,
    )
