"""Quarantine, audit and machines in memory: the fakes of quarantine_repo.py, audit.py and machines.py.

Same semantics as the SQL twins (tests/contract/test_state_repositories.py runs both), with the
row values built by the same helpers (adapters/state/rows.py, `audit_record_values`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from erpsync.adapters.state.audit import audit_record_values, flag_queries
from erpsync.adapters.state.memory_tables import MemoryTables, new_row
from erpsync.adapters.state.rows import (
    REJECT_REASON_MAX,
    machine_changes,
    quarantine_key,
    quarantine_values,
)
from erpsync.adapters.state.tables import AuditEntry, MachineSeen, QuarantineEntry
from erpsync.domain.columns import fit_bytes, fit_id
from erpsync.domain.lifecycle import MM_MACHINE_MAX
from erpsync.domain.model import BadRecord
from erpsync.observability.scrub import scrub


class MemoryQuarantine:
    """`QuarantineRepository` over `MemoryTables.quarantine`."""

    def __init__(self, tables: MemoryTables) -> None:
        self.tables = tables

    def upsert(self, record: BadRecord, now: datetime, action_id: int | None = None) -> bool:
        values = quarantine_values(record)
        key = (values["source"], values["record_key"], values["error_class"])
        existing = next(
            (
                row
                for row in self.tables.quarantine.values()
                if (row["source"], row["record_key"], row["error_class"]) == key
            ),
            None,
        )
        if existing is None:
            row = new_row(
                QuarantineEntry,
                {
                    "id": self.tables.next_id(),
                    **values,
                    "action_id": action_id,
                    "first_seen_at": now,
                    "last_seen_at": now,
                    "attempts": 1,
                    "status": "open",
                },
            )
            self.tables.quarantine[row["id"]] = row
            return True
        reopened = existing["status"] != "open"
        existing.update(
            last_seen_at=now,
            attempts=existing["attempts"] + 1,
            message=values["message"],
            line_number=record.line,
            raw_payload=values["raw_payload"],
        )
        if existing["status"] != "discarded":
            existing["status"] = "open"
        return bool(reopened and existing["status"] == "open")

    def resolve_retried(self, source: str, still_bad: Collection[tuple[str, str]]) -> int:
        resolved = 0
        still_bad = {(quarantine_key(source, key)[1], error_class) for key, error_class in still_bad}
        for row in self.tables.quarantine.values():
            if (
                row["source"] == source
                and row["status"] == "retry"
                and row["action_id"] is None
                and not row["error_class"].lower().startswith("writeback")  # SQL: NOT LIKE 'writeback%'
                and (row["record_key"], row["error_class"]) not in still_bad
            ):
                row["status"] = "resolved"
                resolved += 1
        return resolved

    def open_count(self) -> int:
        return sum(1 for row in self.tables.quarantine.values() if row["status"] == "open")


class MemoryAudit:
    """`AuditRepository` over `MemoryTables.audit`."""

    def __init__(self, tables: MemoryTables) -> None:
        self.tables = tables

    def record(self, entry: Any) -> None:
        self.tables.audit.append(
            new_row(AuditEntry, {**audit_record_values(entry), "id": self.tables.next_id()})
        )

    def flags_audited(self, flags: Collection[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        found: set[tuple[str, str, str]] = set()
        for kinds, jobs, runs in flag_queries(flags):
            found.update(
                (row["action"], row["mm_run_id"] or "", row["detail"] or "")
                for row in self.tables.audit
                if row["erp_job"] in jobs and row["mm_run_id"] in runs and row["action"] in kinds
            )
        return found


class MemoryMachines:
    """`MachineRepository` over `MemoryTables.machines` (by erp_machine)."""

    def __init__(self, tables: MemoryTables) -> None:
        self.tables = tables

    def note(self, machines: Mapping[str, tuple[str | None, int]], now: datetime) -> None:
        if not machines:
            return
        rows = self.tables.machines
        known = {
            name: (row["mm_machine_id"], row["runs_seen"], row["last_seen_at"]) for name, row in rows.items()
        }
        changes = machine_changes(machines, known, now)
        for values in changes.new:
            rows[values["erp_machine"]] = new_row(MachineSeen, values)
        for change in changes.changed:
            rows[change["m_machine"]].update(
                mm_machine_id=change["m_mm"], runs_seen=change["m_runs"], last_seen_at=now
            )
        for name in changes.remapped:  # MM's refusal was of the old MM id
            if rows[name]["rejected_at"] is not None:
                rows[name].update(rejected_at=None, reject_reason=None)
        for name in changes.seen_again:
            rows[name]["last_seen_at"] = now

    def reject(self, mm_machine_id: str, reason: str, now: datetime) -> None:
        for row in self.tables.machines.values():
            if row["mm_machine_id"] == fit_id(mm_machine_id, MM_MACHINE_MAX):
                row.update(rejected_at=now, reject_reason=fit_bytes(scrub(reason), REJECT_REASON_MAX))

    def rejected(self) -> set[str]:
        return {
            row["mm_machine_id"]
            for row in self.tables.machines.values()
            if row["rejected_at"] is not None and row["mm_machine_id"]
        }
