"""Shared set-up for the write-back service and crash tests: bound runs, settings, ERP reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from erpsync.adapters.erp.sinks.staging import staging_table
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.schemas import StartJobRun
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, QuarantineEntry, RunBinding
from erpsync.config import DatabaseSettings, MMSettings, Settings, WritebackSettings
from erpsync.domain.model import PartCounts
from erpsync.domain.writeback_rules import counts_dict

TABLE = "ERPSYNC_RUN_COUNTS"


def start_run(client: MMClient, run_id: str) -> None:
    """Start a job run in MM (the simulator), each on its own machine (one run per machine)."""
    client.start_job_run(
        StartJobRun(erp_job_operation_run_id=run_id, erp_machine_id=f"M-{run_id}", job_name="W100")
    )


def bind_run(
    store: StateStore,
    run_id: str,
    *,
    status: str = "running",
    source: str = "erp",
    mm_end_at: datetime | None = None,
    last: PartCounts | None = None,
    run_key: str | None = None,
    in_doubt: Sequence[PartCounts] = (),
    final_since: datetime | None = None,
) -> None:
    """A binding as the sync loop leaves it after starting the run in MM.

    `in_doubt`: writes whose ERP transaction erpsync never saw end (what a cut connection leaves).
    `final_since`: when erpsync stopped the run, its final counts still due (None: done or not stopped).
    """
    with store.session() as session:
        session.add(
            RunBinding(
                source=source,
                run_key=run_key or f"K-{run_id}",
                mm_run_id=run_id,
                erp_job="W100/1",
                erp_operation="10",
                erp_machine=f"MILL-{run_id}",
                mm_machine_id=f"M-{run_id}",
                status=status,
                mm_end_at=mm_end_at,
                final_counts_since=final_since,
                last_total_parts=last.total if last else None,
                last_good_parts=last.good if last else None,
                last_scrap_parts=last.scrap if last else None,
                last_nonconform_parts=last.nonconform if last else None,
                counts_in_doubt=json.dumps([counts_dict(c) for c in in_doubt]) if in_doubt else None,
            )
        )


def settings_for(erp_url: str, mm: MMSettings, **writeback: Any) -> Settings:
    return Settings(
        mm=mm,
        writeback=WritebackSettings(database=DatabaseSettings(url=erp_url), **writeback),
    )


def staging_counts(engine: Engine) -> dict[str, tuple[int, int, int, int]]:
    table = staging_table(TABLE)
    with engine.connect() as conn:
        return {
            r.RUN_ID: (r.TOTAL_QTY, r.GOOD_QTY, r.SCRAP_QTY, r.NONCONFORM_QTY)
            for r in conn.execute(select(table))
        }


def last_written(store: StateStore) -> dict[str, tuple[int, int, int, int] | None]:
    with store.session() as session:
        rows = session.scalars(select(RunBinding)).all()
    return {
        b.mm_run_id: None
        if b.last_total_parts is None
        else (
            b.last_total_parts,
            b.last_good_parts or 0,
            b.last_scrap_parts or 0,
            b.last_nonconform_parts or 0,
        )
        for b in rows
    }


def audits(store: StateStore, *, outcome: str | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).where(AuditEntry.action == "write_counts").order_by(AuditEntry.id)
    if outcome is not None:
        query = query.where(AuditEntry.outcome == outcome)
    with store.session() as session:
        return list(session.scalars(query).all())


def quarantine(store: StateStore) -> list[QuarantineEntry]:
    with store.session() as session:
        return list(session.scalars(select(QuarantineEntry).order_by(QuarantineEntry.id)).all())
