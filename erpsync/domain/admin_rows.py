"""The rows `erpsync quarantine` and `erpsync machines` read: one definition for the port that
promises them (service/ports.py `QuarantineAdmin`), the state adapter that builds them and the
service that decides what a retry or a discard does with them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """One dead-letter entry (``erpsync_quarantine``)."""

    id: int
    source: str
    record_key: str
    file_name: str | None
    line_number: int | None
    field: str | None
    raw_payload: str | None  # the bad record as read (JSON for a database row)
    error_class: str
    message: str
    action_id: int | None  # the refused MM action, None for a bad source row
    status: str
    attempts: int
    first_seen_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class ActionRow:
    """A journaled action as a person's retry or discard sees it (``erpsync_action``)."""

    id: int
    kind: str
    status: str
    source: str | None
    run_key: str | None
    mm_run_id: str | None
    erp_job: str | None
    erp_operation: str | None
    erp_machine: str | None
    payload: dict[str, Any]  # the MM request body ({} when none)


@dataclass(frozen=True, slots=True)
class MachineRow:
    """An ERP resource seen (``erpsync_machine``)."""

    erp_machine: str
    mm_machine_id: str | None
    runs_seen: int
    last_seen_at: datetime
    rejected_at: datetime | None
    reject_reason: str | None
