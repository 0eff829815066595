"""Parsed rows (CSV lines, generic-SQL rows) as the runs and operations a JobSource yields.

One rule for both row sources, so a CSV export and a mapped table mean the same by a row: a row
of known state is a run, a row not ended is an operation to import, a bad row passes through.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from erpsync.adapters.erp.snapshot import ParsedRow
from erpsync.domain.model import BadRecord, JobOperation, JobOperationRun, RunState


def runs_of(
    items: Iterable[ParsedRow | BadRecord], open_runs: set[str] | None = None
) -> Iterator[JobOperationRun | BadRecord]:
    """Rows whose state is known, as runs (bad rows as they are); rows not started are left out.

    The keys of the runs not ended go into `open_runs` when given (what the next read of a
    watermarked source re-reads by key).
    """
    for item in items:
        if isinstance(item, BadRecord):
            yield item
        elif item.state is not None:
            if open_runs is not None and item.state is not RunState.ENDED:
                open_runs.add(item.run_key)
            yield item.run()


def operations_of(items: Iterable[ParsedRow | BadRecord]) -> Iterator[JobOperation | BadRecord]:
    """Rows not ended, as operations to import as MM jobs (bad rows as they are)."""
    for item in items:
        if isinstance(item, BadRecord):
            yield item
        elif item.state is not RunState.ENDED:
            yield item.operation
