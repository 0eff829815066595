"""The dead-letter queue (``erpsync_quarantine``): bad records kept aside, each with its reason.

A record seen again bumps its entry instead of adding one, and says whether it is new or
re-opened, so callers audit a bad record once, not every cycle. A discarded entry stays discarded.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from erpsync.adapters.state.rows import quarantine_key, quarantine_values
from erpsync.adapters.state.tables import QuarantineEntry
from erpsync.domain.model import BadRecord


class SqlQuarantine:
    """`QuarantineRepository` on one session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def upsert(self, record: BadRecord, now: datetime, action_id: int | None = None) -> bool:
        """Quarantine a bad record; True when the entry is new (or re-opened)."""
        values = quarantine_values(record)
        existing = self.session.scalars(
            select(QuarantineEntry).where(
                QuarantineEntry.source == values["source"],
                QuarantineEntry.record_key == values["record_key"],
                QuarantineEntry.error_class == values["error_class"],
            )
        ).first()
        if existing is None:
            self.session.add(
                QuarantineEntry(
                    **values,
                    action_id=action_id,
                    first_seen_at=now,
                    last_seen_at=now,
                    attempts=1,
                    status="open",
                )
            )
            return True
        reopened = existing.status != "open"
        existing.last_seen_at = now
        existing.attempts += 1
        existing.message = values["message"]
        existing.line_number = record.line
        existing.raw_payload = values["raw_payload"]
        if existing.status != "discarded":
            existing.status = "open"
        return reopened and existing.status == "open"

    def resolve_retried(self, source: str, still_bad: Collection[tuple[str, str]]) -> int:
        """ERP rows a person marked for retry that the full read did not find bad again are resolved.

        Only entries about source rows: refused MM actions (they have an action id) and write-back
        conflicts are settled by their own flows.
        """
        resolved = 0
        still_bad = {(quarantine_key(source, key)[1], error_class) for key, error_class in still_bad}
        for entry in self.session.scalars(
            select(QuarantineEntry).where(
                QuarantineEntry.source == source,
                QuarantineEntry.status == "retry",
                QuarantineEntry.action_id.is_(None),
                QuarantineEntry.error_class.not_like("writeback%"),
            )
        ):
            if (entry.record_key, entry.error_class) not in still_bad:
                entry.status = "resolved"
                resolved += 1
        return resolved

    def open_count(self) -> int:
        self.session.flush()
        query = select(func.count()).select_from(QuarantineEntry).where(QuarantineEntry.status == "open")
        return int(self.session.scalar(query) or 0)
