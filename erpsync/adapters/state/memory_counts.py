"""Write-back state in memory: `erpsync.service.ports.CountsRepository` over `MemoryTables`.

The in-memory unit of work plugs it in as ``counts = MemoryCounts(tables)``. It reads and writes
the same columns as adapters/state/counts.py (bindings by mm_run_id, sink_counts by
(binding_id, sink)) by the same `rules` (domain/writeback_rules.py), so the fast service tests
see what the SQL tables would hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from erpsync.adapters.state.memory_tables import MemoryTables, Row
from erpsync.adapters.state.rows import audit_key, count_target
from erpsync.domain import writeback_rules as rules
from erpsync.domain.model import PartCounts
from erpsync.domain.shop_floor import anchor_of
from erpsync.domain.writeback_rules import AuditKey, CountTarget


class MemoryCounts:
    def __init__(self, tables: MemoryTables) -> None:
        self.tables = tables

    def targets(self, sink: str, *, run_id: str | None) -> list[CountTarget]:
        with_rows = {binding_id for binding_id, _ in self.tables.sink_counts}

        def target(b: Row) -> CountTarget:
            found = count_target(b, self.tables.sink_counts.get((b["id"], sink)), b["id"] in with_rows)
            return replace(found, final_since=b.get("final_counts_since"))

        due = [
            target(b)
            for b in self.tables.bindings.values()
            if (b["mm_run_id"] == run_id if run_id is not None else _due(b))
        ]
        tickets = {(t.source, anchor_of(t.run_key)[0]) for t in due if rules.may_share_ticket(t)}
        siblings = [
            t
            for t in map(target, self.tables.bindings.values())
            if (t.source, anchor_of(t.run_key)[0]) in tickets
        ]
        return sorted(rules.with_sibling_counts(due, siblings), key=lambda t: t.binding_id)

    def blocking_conflicts(self) -> set[tuple[str, str]]:
        return {
            (q["source"], q["record_key"])
            for q in self.tables.quarantine.values()
            if q["error_class"] == rules.CONFLICT_CLASS and q["status"] in rules.BLOCKING_QUARANTINE
        }

    def quarantined_runs(self, error_class: str) -> set[str]:
        return {
            q["record_key"]
            for q in self.tables.quarantine.values()
            if q["error_class"] == error_class and q["status"] in ("open", "retry")
        }

    def resolve_quarantined(self, error_class: str, mm_run_ids: Sequence[str]) -> None:
        ids = set(mm_run_ids)
        for q in self.tables.quarantine.values():
            if (
                q["error_class"] == error_class
                and q["status"] in ("open", "retry")
                and q["record_key"] in ids
            ):
                q["status"] = "resolved"

    def record_intents(self, sink: str, intents: Sequence[tuple[CountTarget, Sequence[PartCounts]]]) -> None:
        for target, doubt in intents:
            self._row(sink, target)["counts_in_doubt"] = rules.encode_in_doubt(doubt)

    def save_written(
        self, sink: str, written: Sequence[tuple[CountTarget, PartCounts]], now: datetime
    ) -> None:
        for target, counts in written:
            values = {**rules.last_columns(counts), "counts_written_at": now, "counts_in_doubt": None}
            self._row(sink, target).update(values)
            self.tables.bindings[target.mm_run_id].update(values)

    def clear_doubt(self, sink: str, targets: Sequence[CountTarget]) -> None:
        for target in targets:
            self._row(sink, target)["counts_in_doubt"] = None
            self.tables.bindings[target.mm_run_id]["counts_in_doubt"] = None

    def set_final_since(self, marks: Sequence[tuple[CountTarget, datetime | None]]) -> None:
        for target, since in marks:
            row = self.tables.bindings[target.mm_run_id]
            if row.get("final_counts_since") == target.final_since:  # not re-stopped meanwhile
                row["final_counts_since"] = since

    def resolve_retried(self, mm_run_ids: Sequence[str]) -> None:
        ids = set(mm_run_ids)
        for q in self.tables.quarantine.values():
            conflict = q["error_class"] == rules.CONFLICT_CLASS and q["status"] == "retry"
            final = q["error_class"] == rules.FINAL_COUNTS_CLASS and q["status"] in ("open", "retry")
            if (conflict or final) and q["record_key"] in ids:
                q["status"] = "resolved"

    def last_audited(self, targets: Sequence[CountTarget]) -> dict[str, AuditKey]:
        wanted = {target.mm_run_id for target in targets}
        found: dict[str, AuditKey] = {}
        for row in self.tables.audit:  # in id order: the latest wins
            if row["action"] == rules.WRITE_ACTION and row["mm_run_id"] in wanted:
                found[row["mm_run_id"]] = audit_key(row["outcome"], row["error_class"], row.get("after_json"))
        return found

    def _row(self, sink: str, target: CountTarget) -> Row:
        """The run's counts row for `sink`, made from what the cycle compared with when new."""
        key = (target.binding_id, sink)
        if key not in self.tables.sink_counts:
            self.tables.sink_counts[key] = {
                "binding_id": target.binding_id,
                "sink": sink,
                **rules.last_columns(target.last),
                "counts_written_at": None,
                "counts_in_doubt": None,
            }
        return self.tables.sink_counts[key]


def _due(binding: Row) -> bool:
    """adapters/state/counts.py's selection of the runs a cycle reads."""
    status = binding["status"]
    if status in rules.ACTIVE_STATUSES or (status == "vanished" and binding.get("mm_end_at") is None):
        return True
    return binding.get("final_counts_since") is not None
