"""The action journal and run bindings in memory: the fakes of adapters/state/actions.py and bindings.py.

Same semantics as the SQL twins (tests/contract/test_state_repositories.py runs both): intents are
journaled claimed until `claim_until`, an action is due while pending or retryable and its
`next_attempt_at` has passed, a claim or a settlement only takes a due action (settle-once), and
NULL (None) in a settled binding change keeps the column. The row values come from adapters/state/rows.py.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from itertools import islice
from typing import Any

from erpsync.adapters.state.memory_records import MemoryMachines, MemoryQuarantine
from erpsync.adapters.state.memory_tables import MemoryTables, Row, new_row
from erpsync.adapters.state.rows import (
    BOUND_COLUMNS,
    action_values,
    binding_row,
    binding_values,
    bound_runs,
    by_run_id,
    drift_values,
    flag_final_counts,
    flag_values,
    intent_binding_values,
    intent_row,
    journaled_action,
    latest_bodies,
    refused_record,
    settle_audit,
    with_origins,
)
from erpsync.adapters.state.tables import AuditEntry, RunBinding, SyncAction, utcnow
from erpsync.domain.drift import Drift
from erpsync.domain.lifecycle import (
    DUE_ACTION_STATUSES,
    MM_OPEN_BINDING_STATUSES,
    RECONCILE_BINDING_STATUSES,
    ActionKind,
    BoundRun,
    Intent,
    JournaledAction,
    JournalStamp,
    Outcome,
)
from erpsync.domain.plan import Flag
from erpsync.domain.shop_floor import anchor_of
from erpsync.domain.writeback_rules import final_counts_mark


def _due(row: Row, now: datetime) -> bool:
    return row["status"] in DUE_ACTION_STATUSES and (
        row["next_attempt_at"] is None or row["next_attempt_at"] <= now
    )


class MemoryActions:
    """`ActionRepository` over `MemoryTables.actions`."""

    def __init__(self, tables: MemoryTables) -> None:
        self.tables = tables

    def existing_keys(self, keys: Collection[str]) -> set[str]:
        wanted = set(keys)
        return {row["idempotency_key"] for row in self.tables.actions.values()} & wanted

    def record(self, intents: Sequence[Intent], stamp: JournalStamp) -> list[JournaledAction]:
        if not intents:
            return []
        now = utcnow()
        known = {row["idempotency_key"] for row in self.tables.actions.values()}
        rows = []
        for intent in intents:
            if intent.idempotency_key in known:  # the unique index's IntegrityError in SQL
                raise ValueError(f"idempotency key {intent.idempotency_key!r} is journaled already")
            known.add(intent.idempotency_key)
            values = intent_row(intent, now=now, stamp=stamp)
            row = new_row(SyncAction, {**values, "id": self.tables.next_id()})
            self.tables.actions[row["id"]] = row
            rows.append(row)
        bindings = MemoryBindings(self.tables)
        bindings.insert([i.new_binding for i in intents if i.new_binding], now)
        bindings.apply_intents(intents, now)
        return with_origins([journaled_action(row) for row in rows], intents)

    def due(self, now: datetime, limit: int = 10_000) -> list[JournaledAction]:
        due = (row for _, row in sorted(self.tables.actions.items()) if _due(row, now))
        return [journaled_action(row) for row in islice(due, limit)]

    def claim(self, action: JournaledAction, now: datetime, claim_until: datetime) -> JournaledAction | None:
        row = self.tables.actions.get(action.id)
        if row is None or not _due(row, now):
            return None
        row.update(attempts=row["attempts"] + 1, last_attempt_at=now, next_attempt_at=claim_until)
        return replace(action, attempts=action.attempts + 1)

    def settle(self, outcomes: Iterable[Outcome], *, fencing_token: int | None) -> list[Outcome]:
        now = utcnow()
        written = [o for o in outcomes if self._settle_action(action_values(o, now))]
        if not written:
            return written
        changes = sorted((values for o in written if (values := binding_values(o))), key=by_run_id)
        MemoryBindings(self.tables).settle(changes, now)
        machines, quarantine = MemoryMachines(self.tables), MemoryQuarantine(self.tables)
        for outcome in written:
            if outcome.rejected_machine:
                machines.reject(outcome.rejected_machine, outcome.error_message or "refused by MM", now)
            if outcome.quarantine:
                quarantine.upsert(refused_record(outcome), now, action_id=outcome.action.id)
            audit = new_row(AuditEntry, {**settle_audit(outcome, fencing_token), "id": self.tables.next_id()})
            self.tables.audit.append(audit)
        return written

    def _settle_action(self, values: dict[str, Any]) -> bool:
        """The journal update of one outcome, only while the action is due (`_SETTLE_ACTION`)."""
        row = self.tables.actions.get(values["a_id"])
        if row is None or row["status"] not in DUE_ACTION_STATUSES:
            return False
        row.update({name[2:]: value for name, value in values.items() if name != "a_id"})
        row["status"] = str(row["status"])
        return True

    def release(self, action_ids: Collection[int]) -> None:
        for action_id in action_ids:
            row = self.tables.actions.get(action_id)
            if row is not None and row["status"] == "pending":
                row["next_attempt_at"] = None

    def started_bodies(self, mm_run_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        wanted = set(mm_run_ids)
        rows = (
            (row["mm_run_id"], row["payload"])
            for _, row in sorted(self.tables.actions.items())
            if row["mm_run_id"] in wanted
            and row["kind"] == str(ActionKind.START)
            and row["status"] == "succeeded"
        )
        return latest_bodies(rows)


class MemoryBindings:
    """`BindingRepository` over `MemoryTables.bindings` (by mm_run_id)."""

    def __init__(self, tables: MemoryTables) -> None:
        self.tables = tables

    def _runs(self, rows: Iterable[Row]) -> dict[str, BoundRun]:
        return bound_runs(tuple(row[name] for name in BOUND_COLUMNS) for row in rows)

    def _of(self, source: str) -> Iterator[Row]:
        return (row for row in self.tables.bindings.values() if row["source"] == source)

    def open_runs(self, source: str) -> dict[str, BoundRun]:
        return self._runs(row for row in self._of(source) if row["status"] in RECONCILE_BINDING_STATUSES)

    def generations(self, source: str, anchors: Collection[str]) -> dict[str, BoundRun]:
        wanted = set(anchors)
        return self._runs(row for row in self._of(source) if anchor_of(row["run_key"])[0] in wanted)

    def by_keys(self, source: str, run_keys: Collection[str]) -> dict[str, BoundRun]:
        wanted = set(run_keys)
        return self._runs(row for row in self._of(source) if row["run_key"] in wanted)

    def all_runs(self, source: str) -> dict[str, BoundRun]:
        return self._runs(self._of(source))

    def latest_ends(
        self, source: str, mm_machines: Collection[str], since: datetime, until: datetime
    ) -> dict[str, datetime]:
        wanted = set(mm_machines)
        found: dict[str, datetime] = {}
        for row in self._of(source):
            end = row["mm_end_at"] or row["erp_end_at"]
            machine = row["mm_machine_id"]
            if (
                machine in wanted
                and row["status"] not in MM_OPEN_BINDING_STATUSES
                and end is not None
                and since < end <= until
            ):
                found[machine] = max(end, found.get(machine, end))
        return found

    def exists(self, mm_run_id: str) -> bool:
        return mm_run_id in self.tables.bindings

    def lock(self, mm_run_ids: Collection[str]) -> None:
        """Nothing to do: the unit of work holds the tables' one lock."""

    def remember_flag(self, flag: Flag) -> None:
        values = flag_values(flag)
        row = self.tables.bindings.get(flag.mm_run_id)
        if values and row is not None:
            now = utcnow()
            if (since := flag_final_counts(flag, values, now)) is not None:
                values["final_counts_since"] = since
            row.update(values, updated_at=now)

    def record_drift(self, drift: Drift) -> bool:
        row = self.tables.bindings.get(drift.mm_run_id)
        if row is None or row["status"] != str(drift.was):
            return False
        row.update(drift_values(drift), updated_at=utcnow(), version=row["version"] + 1)
        return True

    # -- for the action journal ------------------------------------------------------------------
    def insert(self, rows: Iterable[dict[str, Any]], now: datetime) -> None:
        bound = {(b["source"], b["run_key"]) for b in self.tables.bindings.values()}
        for values in rows:
            row = new_row(
                RunBinding,
                {**binding_row(values), "id": self.tables.next_id(), "created_at": now, "updated_at": now},
            )
            key = (row["source"], row["run_key"])
            if row["mm_run_id"] in self.tables.bindings or key in bound:  # SQL: the unique indexes
                raise ValueError(f"run {key} ({row['mm_run_id']}) is bound already")
            bound.add(key)
            self.tables.bindings[row["mm_run_id"]] = row

    def apply_intents(self, intents: Iterable[Intent], now: datetime) -> None:
        for intent in intents:
            values = intent_binding_values(intent)
            row = self.tables.bindings.get(intent.mm_run_id or "")
            if values and row is not None:
                row.update(values, updated_at=now, version=row["version"] + 1)

    def settle(self, changes: list[dict[str, Any]], now: datetime) -> None:
        for values in changes:
            row = self.tables.bindings.get(values["b_run_id"])
            if row is None:
                continue
            for column in ("status", "mm_start_at", "mm_end_at", "in_setup"):
                if values[f"b_{column}"] is not None:
                    row[column] = values[f"b_{column}"]
            row["status"] = str(row["status"])
            if (since := final_counts_mark(values["b_status"], now)) is not None:
                row["final_counts_since"] = since
            row.update(updated_at=now, version=row["version"] + 1)
