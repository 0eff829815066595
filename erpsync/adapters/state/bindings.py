"""Run bindings (``erpsync_run_binding``): which MM run erpsync made for which ERP run.

A sync cycle always reads the bindings MM may still have open (live, stop in flight, vanished);
finished ones (stopped, failed) only for the run keys the ERP snapshot holds, so the cost of a
cycle does not grow with history (migration 0005's indexes). A cycle with new starts also reads
when each of their machines was last freed (`latest_ends`, migration 0008's index).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from erpsync.adapters.state.rows import (
    BOUND_COLUMNS,
    binding_row,
    bound_runs,
    chunks,
    drift_values,
    flag_final_counts,
    flag_values,
    intent_binding_values,
)
from erpsync.adapters.state.tables import RunBinding, utcnow
from erpsync.domain.drift import Drift
from erpsync.domain.lifecycle import (
    MM_OPEN_BINDING_STATUSES,
    RECONCILE_BINDING_STATUSES,
    BindingStatus,
    BoundRun,
    Intent,
)
from erpsync.domain.plan import Flag
from erpsync.domain.shop_floor import GENERATION_MARK
from erpsync.domain.writeback_rules import final_counts_mark

_TABLE = cast(Table, RunBinding.__table__)
_c = _TABLE.c
# ORM attributes, not table columns: the session flushes pending rows before such a statement
_BOUND = tuple(getattr(RunBinding, name) for name in BOUND_COLUMNS)
_NO_SYNC = {"synchronize_session": False}
# runs MM no longer has open: their ends tell when a machine was freed
_FINISHED = sorted(set(BindingStatus) - MM_OPEN_BINDING_STATUSES)
# NULL parameters keep the column: an outcome only sets the binding fields it knows.
_SETTLE_BINDING = (
    update(_TABLE)
    .where(_c.mm_run_id == bindparam("b_run_id"))
    .values(
        status=func.coalesce(bindparam("b_status", type_=_c.status.type), _c.status),
        mm_start_at=func.coalesce(bindparam("b_mm_start_at", type_=_c.mm_start_at.type), _c.mm_start_at),
        mm_end_at=func.coalesce(bindparam("b_mm_end_at", type_=_c.mm_end_at.type), _c.mm_end_at),
        in_setup=func.coalesce(bindparam("b_in_setup", type_=_c.in_setup.type), _c.in_setup),
        final_counts_since=func.coalesce(
            bindparam("b_final_since", type_=_c.final_counts_since.type), _c.final_counts_since
        ),
        updated_at=bindparam("b_now", type_=_c.updated_at.type),
        version=_c.version + 1,
    )
)


class SqlBindings:
    """`BindingRepository` on one session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def open_runs(self, source: str) -> dict[str, BoundRun]:
        """The bindings of runs MM may still have open, through the (source, status) index.

        What a sync cycle always needs: the vanished scan and one-run-per-machine look at these only.
        """
        query = select(*_BOUND).where(
            RunBinding.source == source, RunBinding.status.in_(sorted(RECONCILE_BINDING_STATUSES))
        )
        return bound_runs(self.session.execute(query))

    def by_keys(self, source: str, run_keys: Collection[str]) -> dict[str, BoundRun]:
        """The bindings of these run keys (any status), through the (source, run_key) unique index.

        A run the ERP still reports whose binding is finished must be recognised, never started twice.
        """
        found: dict[str, BoundRun] = {}
        for chunk in chunks(sorted(run_keys)):
            query = select(*_BOUND).where(RunBinding.source == source, RunBinding.run_key.in_(chunk))
            found.update(bound_runs(self.session.execute(query)))
        return found

    def generations(self, source: str, anchors: Collection[str]) -> dict[str, BoundRun]:
        """Every run generation of these anchor tickets: key ``<anchor>`` or ``<anchor>#g<n>``
        (domain/shop_floor.py). Asked only for open tickets without a binding, so a few per cycle."""
        found: dict[str, BoundRun] = {}
        for chunk in chunks(sorted(anchors), 100):
            query = select(*_BOUND).where(
                RunBinding.source == source,
                or_(
                    RunBinding.run_key.in_(chunk),
                    *(RunBinding.run_key.startswith(f"{a}{GENERATION_MARK}", autoescape=True) for a in chunk),
                ),
            )
            found.update(bound_runs(self.session.execute(query)))
        return found

    def all_runs(self, source: str) -> dict[str, BoundRun]:
        """Every binding of `source` (resync: an explicit, whole-history request)."""
        return bound_runs(self.session.execute(select(*_BOUND).where(RunBinding.source == source)))

    def latest_ends(
        self, source: str, mm_machines: Collection[str], since: datetime, until: datetime
    ) -> dict[str, datetime]:
        """When erpsync last freed each machine, through the (mm_machine_id, mm_end_at) index:
        only runs that ended after ``since`` are read, not the machine's history."""
        found: dict[str, datetime] = {}
        end = func.coalesce(RunBinding.mm_end_at, RunBinding.erp_end_at)
        for chunk in chunks(sorted(mm_machines)):
            query = (
                select(RunBinding.mm_machine_id, func.max(end))
                .where(
                    RunBinding.mm_machine_id.in_(chunk),
                    or_(
                        RunBinding.mm_end_at > since,
                        and_(RunBinding.mm_end_at.is_(None), RunBinding.erp_end_at > since),
                    ),
                    end <= until,
                    RunBinding.source == source,
                    RunBinding.status.in_(_FINISHED),
                )
                .group_by(RunBinding.mm_machine_id)
            )
            found.update({machine: at for machine, at in self.session.execute(query) if at is not None})
        return found

    def exists(self, mm_run_id: str) -> bool:
        return self.session.scalar(select(RunBinding.id).where(RunBinding.mm_run_id == mm_run_id)) is not None

    def lock(self, mm_run_ids: Collection[str]) -> None:
        """Lock these bindings now, in mm_run_id order, before a transaction updates them in steps.

        Every flow that updates several bindings in one transaction takes their row locks in the same
        order (mm_run_id), so two of them (a sync settling outcomes, a write-back committing counts)
        can wait for each other but never deadlock. A transaction that updates bindings in more than
        one statement calls this first; its later statements then find the rows already locked.
        SQLite has no row locks (one writer at a time): nothing is sent there.
        """
        if not mm_run_ids or self.session.get_bind().dialect.name == "sqlite":
            return
        for chunk in chunks(sorted(set(mm_run_ids))):
            self.session.execute(
                select(RunBinding.id)
                .where(RunBinding.mm_run_id.in_(chunk))
                .order_by(RunBinding.mm_run_id)
                .with_for_update()
            ).all()

    def remember_flag(self, flag: Flag) -> None:
        """Store what `flag` changes on its binding, so the same flag is not raised again."""
        values = flag_values(flag)
        if values:
            now = utcnow()
            if (since := flag_final_counts(flag, values, now)) is not None:
                values["final_counts_since"] = since  # stopped: its final counts are due
            self.session.execute(
                update(RunBinding)
                .where(RunBinding.mm_run_id == flag.mm_run_id)
                .values(**values, updated_at=now)
                .execution_options(**_NO_SYNC)
            )

    def record_drift(self, drift: Drift) -> bool:
        """A run MM lost or ended, recorded while the binding is still `drift.was` (one statement:
        a stop or a resync that got there first wins)."""
        result = self.session.execute(
            update(RunBinding)
            .where(RunBinding.mm_run_id == drift.mm_run_id, RunBinding.status == str(drift.was))
            .values(
                **drift_values(drift),
                updated_at=utcnow(),
                version=RunBinding.version + 1,
            )
            .execution_options(**_NO_SYNC)
        )
        return bool(cast(CursorResult[Any], result).rowcount)

    # -- for the action journal (adapters/state/actions.py) ------------------------------------
    def insert(self, rows: Iterable[Mapping[str, Any]], now: datetime) -> None:
        """New bindings of journaled starts."""
        new = [{**binding_row(row), "created_at": now, "updated_at": now} for row in rows]
        for chunk in chunks(new):
            self.session.execute(insert(RunBinding), list(chunk))

    def apply_intents(self, intents: Iterable[Intent], now: datetime) -> None:
        """The changes journaled intents make to existing bindings, in lock order (mm_run_id)."""
        for intent in sorted(intents, key=lambda i: i.mm_run_id or ""):
            values = intent_binding_values(intent)
            if values:
                self.session.execute(
                    update(RunBinding)
                    .where(RunBinding.mm_run_id == intent.mm_run_id)
                    .values(**values, updated_at=now, version=RunBinding.version + 1)
                    .execution_options(**_NO_SYNC)
                )

    def settle(self, changes: list[dict[str, Any]], now: datetime) -> None:
        """Settled outcomes' binding changes (`rows.binding_values`), sorted by mm_run_id: one executemany."""
        if changes:
            self.session.execute(
                _SETTLE_BINDING,
                [
                    # a stop settled: the run's final counts are due (write-back reads it again)
                    {**values, "b_now": now, "b_final_since": final_counts_mark(values["b_status"], now)}
                    for values in changes
                ],
            )
