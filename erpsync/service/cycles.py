"""One `erpsync_cycle` row per cycle: what `erpsync status` and `/readyz` read.

Every flow (sync, write-back, imports, resync, purge) wraps its work in `cycle(...)`, so the
last-success time of each loop is in the database, not only in a process that may have died.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from erpsync.domain.clock import utcnow
from erpsync.domain.errors import ConfigError
from erpsync.observability.correlation import current_correlation_id, current_trigger, new_correlation_id
from erpsync.observability.metrics import CYCLES, LAST_SUCCESS
from erpsync.observability.scrub import scrub
from erpsync.service.ports import UnitOfWorkFactory


@dataclass
class CycleRecord:
    """Handed to the flow: it fills `summary` and may mark the cycle partial."""

    id: int
    kind: str
    summary: dict[str, Any] = field(default_factory=dict)
    outcome: str = "ok"


@contextmanager
def cycle(uow: UnitOfWorkFactory, kind: str) -> Iterator[CycleRecord]:
    """Record the cycle's start, then its outcome: ok / partial / failed / config_error."""
    with uow() as work:
        cycle_id = work.cycles.start(
            kind,
            correlation_id=current_correlation_id() or new_correlation_id(),
            trigger=current_trigger(),
            started_at=utcnow(),
        )
    record = CycleRecord(id=cycle_id, kind=kind)
    error: str | None = None
    started = time.monotonic()
    try:
        yield record
    except ConfigError as exc:
        record.outcome, error = "config_error", str(exc)
        raise
    except BaseException as exc:
        record.outcome, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        record.summary.setdefault("seconds", round(time.monotonic() - started, 3))
        _finish(uow, record, error)


def _finish(uow: UnitOfWorkFactory, record: CycleRecord, error: str | None) -> None:
    finished = utcnow()
    try:
        with uow() as work:
            work.cycles.finish(
                record.id,
                finished_at=finished,
                outcome=record.outcome,
                summary=json.dumps(record.summary, default=str, sort_keys=True),
                error=scrub(error)[:4000] if error else None,
            )
    finally:
        CYCLES.labels(loop=record.kind, outcome=record.outcome).inc()
        if record.outcome == "ok":
            LAST_SUCCESS.labels(loop=record.kind).set(finished.timestamp())
