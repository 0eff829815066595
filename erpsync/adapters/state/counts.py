"""Write-back state on SQLAlchemy: the counts erpsync last wrote to each sink, per bound run.

It implements `erpsync.service.ports.CountsRepository` (structurally). Updates are Core
statements sent as one executemany per batch (a cycle over thousands of runs must cost about its
MM reads), and they leave the binding's ORM version alone: the sync loop owns the other columns
and must not see its own optimistic lock fail because counts were written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from erpsync.adapters.state.rows import SINK_COUNT_COLUMNS, audit_key, chunks, count_target
from erpsync.adapters.state.tables import AuditEntry, QuarantineEntry, RunBinding, SinkCounts, utcnow
from erpsync.domain.model import PartCounts
from erpsync.domain.shop_floor import GENERATION_MARK, anchor_of
from erpsync.domain.writeback_rules import (
    ACTIVE_STATUSES,
    BLOCKING_QUARANTINE,
    CONFLICT_CLASS,
    FINAL_COUNTS_CLASS,
    WRITE_ACTION,
    AuditKey,
    CountTarget,
    encode_in_doubt,
    last_columns,
    with_sibling_counts,
)


class SqlCounts:
    def __init__(self, session: Session) -> None:
        self.session = session

    def targets(self, sink: str, *, run_id: str | None) -> list[CountTarget]:
        b = RunBinding
        query = _target_query(sink)
        if run_id is not None:
            query = query.where(b.mm_run_id == run_id)
        else:
            # each branch has its index (status; final_counts_since): the history is never read
            query = query.where(
                or_(
                    b.status.in_(ACTIVE_STATUSES),
                    and_(b.status == "vanished", b.mm_end_at.is_(None)),  # MM may still be running it
                    b.final_counts_since.is_not(None),  # stopped, final counts not yet in the ERP
                )
            )
        targets = [_target(row._mapping) for row in self.session.execute(query)]
        return with_sibling_counts(targets, self._siblings(sink, targets))

    def _siblings(
        self, sink: str, targets: Sequence[CountTarget]
    ) -> dict[int, tuple[str, str, PartCounts | None]]:
        """Every run generation of the tickets that have several (keys ``<ticket>#g<n>``), with
        what erpsync last wrote for each into this sink: by the unique (source, run_key) index."""
        tickets = sorted(
            {(t.source, anchor_of(t.run_key)[0]) for t in targets if GENERATION_MARK in t.run_key}
        )
        found: dict[int, tuple[str, str, PartCounts | None]] = {}
        for chunk in chunks(tickets, 100):
            keys = or_(
                *(
                    and_(
                        RunBinding.source == source,
                        or_(
                            RunBinding.run_key == anchor,
                            RunBinding.run_key.startswith(f"{anchor}{GENERATION_MARK}", autoescape=True),
                        ),
                    )
                    for source, anchor in chunk
                )
            )
            for row in self.session.execute(_target_query(sink).where(keys)):
                target = _target(row._mapping)
                found[target.binding_id] = (target.source, anchor_of(target.run_key)[0], target.last)
        return found

    def blocking_conflicts(self) -> set[tuple[str, str]]:
        query = select(QuarantineEntry.source, QuarantineEntry.record_key).where(
            QuarantineEntry.error_class == CONFLICT_CLASS,
            QuarantineEntry.status.in_(BLOCKING_QUARANTINE),
        )
        return {(source, record_key) for source, record_key in self.session.execute(query)}

    def quarantined_runs(self, error_class: str) -> set[str]:
        query = select(QuarantineEntry.record_key).where(
            QuarantineEntry.error_class == error_class, QuarantineEntry.status.in_(("open", "retry"))
        )
        return set(self.session.scalars(query))

    def resolve_quarantined(self, error_class: str, mm_run_ids: Sequence[str]) -> None:
        for chunk in chunks(sorted(mm_run_ids)):
            self.session.execute(
                update(QuarantineEntry)
                .where(
                    QuarantineEntry.error_class == error_class,
                    QuarantineEntry.status.in_(("open", "retry")),
                    QuarantineEntry.record_key.in_(chunk),
                )
                .values(status="resolved", last_seen_at=utcnow())
                .execution_options(synchronize_session=False)
            )

    def record_intents(self, sink: str, intents: Sequence[tuple[CountTarget, Sequence[PartCounts]]]) -> None:
        self._set(sink, [(target, {"counts_in_doubt": encode_in_doubt(doubt)}) for target, doubt in intents])

    def save_written(
        self, sink: str, written: Sequence[tuple[CountTarget, PartCounts]], now: datetime
    ) -> None:
        self._set(
            sink,
            [
                (target, {**last_columns(counts), "counts_written_at": now, "counts_in_doubt": None})
                for target, counts in written
            ],
        )
        table = cast(Table, RunBinding.__table__)
        statement = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                last_total_parts=bindparam("b_total"),
                last_good_parts=bindparam("b_good"),
                last_scrap_parts=bindparam("b_scrap"),
                last_nonconform_parts=bindparam("b_nonconform"),
                counts_written_at=bindparam("b_at"),
                counts_in_doubt=None,
            )
        )
        params = [
            {
                "b_id": target.binding_id,
                "b_total": c.total,
                "b_good": c.good,
                "b_scrap": c.scrap,
                "b_nonconform": c.nonconform,
                "b_at": now,
            }
            for target, c in written
        ]
        if params:
            self.session.execute(statement, params)

    def clear_doubt(self, sink: str, targets: Sequence[CountTarget]) -> None:
        self._set(sink, [(target, {"counts_in_doubt": None}) for target in targets])
        binding_ids = [target.binding_id for target in targets]
        table = cast(Table, RunBinding.__table__)
        for chunk in chunks(binding_ids):
            self.session.execute(update(table).where(table.c.id.in_(chunk)).values(counts_in_doubt=None))

    def set_final_since(self, marks: Sequence[tuple[CountTarget, datetime | None]]) -> None:
        """Each run's `final_counts_since` (None: its final counts are done); version left alone.

        Only while the marker is still the one the cycle read: a stop settled meanwhile (a resync's
        restart, stopped again) keeps its newer marker, so that stop's final read is not lost.
        """
        table = cast(Table, RunBinding.__table__)
        column = table.c.final_counts_since
        statement = (
            update(table)
            .where(table.c.id == bindparam("f_id"), column == bindparam("f_was", type_=column.type))
            .values(final_counts_since=bindparam("f_since", type_=column.type))
        )
        params = [
            {"f_id": target.binding_id, "f_was": target.final_since, "f_since": since}
            for target, since in marks
        ]
        if params:
            self.session.execute(statement, params)

    def resolve_retried(self, mm_run_ids: Sequence[str]) -> None:
        for chunk in chunks(list(mm_run_ids)):
            self.session.execute(
                update(QuarantineEntry)
                .where(
                    or_(
                        and_(
                            QuarantineEntry.error_class == CONFLICT_CLASS, QuarantineEntry.status == "retry"
                        ),
                        # a run given up on whose counts a person got written (`writeback --run`)
                        and_(
                            QuarantineEntry.error_class == FINAL_COUNTS_CLASS,
                            QuarantineEntry.status.in_(("open", "retry")),
                        ),
                    ),
                    QuarantineEntry.record_key.in_(chunk),
                )
                .values(status="resolved", last_seen_at=utcnow())
                .execution_options(synchronize_session=False)
            )

    def last_audited(self, targets: Sequence[CountTarget]) -> dict[str, AuditKey]:
        """Via the erp_job index: the latest audit id per run, then those rows."""
        found: dict[str, AuditKey] = {}
        for chunk in chunks(targets):
            latest = (
                select(func.max(AuditEntry.id))
                .where(
                    AuditEntry.erp_job.in_({t.erp_job for t in chunk}),
                    AuditEntry.mm_run_id.in_([t.mm_run_id for t in chunk]),
                    AuditEntry.action == WRITE_ACTION,
                )
                .group_by(AuditEntry.mm_run_id)
            )
            rows = self.session.execute(
                select(
                    AuditEntry.mm_run_id, AuditEntry.outcome, AuditEntry.error_class, AuditEntry.after_json
                ).where(AuditEntry.id.in_(latest))
            )
            for mm_run_id, outcome, error_class, after_json in rows:
                found[str(mm_run_id)] = audit_key(outcome, error_class, after_json)
        return found

    def _set(self, sink: str, values: Sequence[tuple[CountTarget, dict[str, Any]]]) -> None:
        """Set columns of each run's `erpsync_sink_counts` row for `sink` (the same columns for all).

        A run without a row gets one, holding the counts the cycle compared the ERP with
        (`CountTarget.last`, taken over from the binding when no sink had a row yet) plus the given
        columns.
        """
        if not values:
            return
        table = cast(Table, SinkCounts.__table__)
        ids = [target.binding_id for target, _ in values]
        existing: set[int] = set()
        for chunk in chunks(ids):
            existing.update(
                self.session.scalars(
                    select(table.c.binding_id).where(table.c.sink == sink, table.c.binding_id.in_(chunk))
                )
            )
        columns = sorted(values[0][1])
        updates = [
            {"s_id": target.binding_id, **{f"s_{c}": v[c] for c in columns}}
            for target, v in values
            if target.binding_id in existing
        ]
        inserts = [
            {"binding_id": target.binding_id, "sink": sink, **last_columns(target.last), **v}
            for target, v in values
            if target.binding_id not in existing
        ]
        if updates:
            self.session.execute(
                update(table)
                .where(table.c.binding_id == bindparam("s_id"), table.c.sink == sink)
                .values({c: bindparam(f"s_{c}") for c in columns}),
                updates,
            )
        if inserts:
            self.session.execute(insert(table), inserts)


Sibling = tuple[str, str, PartCounts | None]  # (source, anchor ticket key, last written)


def _target_query(sink: str) -> Select[Any]:
    """Bindings with what erpsync last wrote for them: into `sink`, else (before counts were kept
    per sink) on the binding."""
    b = RunBinding
    mine = aliased(SinkCounts)
    query = (
        select(
            b.id,
            b.mm_run_id,
            b.run_key,
            b.source,
            b.erp_job,
            b.erp_operation,
            b.erp_machine,
            b.status,
            b.last_total_parts,
            b.last_good_parts,
            b.last_scrap_parts,
            b.last_nonconform_parts,
            b.counts_in_doubt,
            b.final_counts_since,
            mine.binding_id.label("sink_row"),
            mine.last_total_parts.label("sink_last_total_parts"),
            mine.last_good_parts.label("sink_last_good_parts"),
            mine.last_scrap_parts.label("sink_last_scrap_parts"),
            mine.last_nonconform_parts.label("sink_last_nonconform_parts"),
            mine.counts_in_doubt.label("sink_counts_in_doubt"),
            exists().where(SinkCounts.binding_id == b.id).label("any_sink"),
        )
        .outerjoin(mine, and_(mine.binding_id == b.id, mine.sink == sink))
        .order_by(b.id)
    )
    return cast(Select[Any], query)


def _target(row: Any) -> CountTarget:
    sink_row = None
    if row["sink_row"] is not None:
        sink_row = {c: row[f"sink_{c}"] for c in SINK_COUNT_COLUMNS}
    target = count_target(row, sink_row, bool(row["any_sink"]))
    return replace(target, final_since=row["final_counts_since"])
