"""The machines seen (``erpsync_machine``): every ERP resource, its MM machine id, MM's refusal.

MM's refusal (`rejected_at`) belongs to the MM machine id: runs on a refused id are quarantined,
not re-sent; when the mapping sends a resource to another id, the refusal is cleared.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from erpsync.adapters.state.rows import REJECT_REASON_MAX, chunks, machine_changes
from erpsync.adapters.state.tables import MachineSeen
from erpsync.domain.columns import fit_bytes, fit_id
from erpsync.domain.lifecycle import MM_MACHINE_MAX
from erpsync.observability.scrub import scrub

_TABLE = cast(Table, MachineSeen.__table__)
_c = _TABLE.c


class SqlMachines:
    """`MachineRepository` on one session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def note(self, machines: Mapping[str, tuple[str | None, int]], now: datetime) -> None:
        """Remember every ERP resource seen, its MM machine id and how many runs used it.

        Only what changed is written (`rows.machine_changes`), with Core statements, not ORM objects.
        """
        if not machines:
            return
        known: dict[str, tuple[str | None, int, datetime]] = {
            erp_machine: (mm_machine_id, runs_seen, last_seen_at)
            for erp_machine, mm_machine_id, runs_seen, last_seen_at in self.session.execute(
                select(_c.erp_machine, _c.mm_machine_id, _c.runs_seen, _c.last_seen_at)
            )
        }
        changes = machine_changes(machines, known, now)
        for chunk in chunks(changes.new):
            self.session.execute(insert(_TABLE), list(chunk))
        if changes.changed:
            self.session.execute(
                update(_TABLE)
                .where(_c.erp_machine == bindparam("m_machine"))
                .values(mm_machine_id=bindparam("m_mm"), runs_seen=bindparam("m_runs"), last_seen_at=now),
                changes.changed,
            )
            # MM's refusal was of the old MM id: a resource mapped to another id is asked about again
            for chunk in chunks(changes.remapped):
                self.session.execute(
                    update(_TABLE)
                    .where(_c.erp_machine.in_(chunk), _c.rejected_at.is_not(None))
                    .values(rejected_at=None, reject_reason=None)
                )
        for chunk in chunks(changes.seen_again):
            self.session.execute(update(_TABLE).where(_c.erp_machine.in_(chunk)).values(last_seen_at=now))

    def reject(self, mm_machine_id: str, reason: str, now: datetime) -> None:
        """MM refused this machine id: remember it so runs on it are quarantined, not re-sent."""
        self.session.execute(
            update(MachineSeen)
            .where(MachineSeen.mm_machine_id == fit_id(mm_machine_id, MM_MACHINE_MAX))
            .values(rejected_at=now, reject_reason=fit_bytes(scrub(reason), REJECT_REASON_MAX))
            .execution_options(synchronize_session=False)
        )

    def rejected(self) -> set[str]:
        """MM machine ids MM refused."""
        rows = self.session.scalars(
            select(MachineSeen.mm_machine_id).where(
                MachineSeen.rejected_at.is_not(None), MachineSeen.mm_machine_id.is_not(None)
            )
        )
        return {machine for machine in rows if machine}
