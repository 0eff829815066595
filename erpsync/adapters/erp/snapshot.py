"""The concrete `RunSnapshot`: a one-shot stream of runs and bad records that counts as it goes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from erpsync.domain.model import BadRecord, JobOperation, JobOperationRun, RunState, SourceStats
from erpsync.observability.metrics import SOURCE_ROWS

Item = JobOperationRun | BadRecord
Producer = Callable[[SourceStats], Iterator[Item]]
T = TypeVar("T", JobOperationRun | BadRecord, JobOperation | BadRecord)


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """One good source row (CSV line or generic-SQL row): its operation, run state and run key.

    `state` None means the operation has not started: it is an operation to import, not a run.
    """

    operation: JobOperation
    state: RunState | None
    run_key: str
    start_at: datetime | None
    end_at: datetime | None

    def run(self) -> JobOperationRun:
        """The row as a run; only for rows whose state is known."""
        assert self.state is not None
        run_fields = (self.run_key, self.operation, self.state, self.start_at, self.end_at)
        return JobOperationRun(*run_fields, origin=self.operation.origin)


class StreamSnapshot:
    """Runs streamed from a producer (a query or a file) so memory stays flat.

    The producer opens its cursor or file when iteration starts and closes it when iteration ends
    (or the generator is closed). `stats` is complete once the snapshot has been iterated.
    `token` is whatever the source needs to acknowledge it (e.g. the CSV file read).
    """

    def __init__(self, producer: Producer, *, complete: bool, kind: str, token: object = None) -> None:
        self.complete = complete
        self.stats = SourceStats()
        self.token = token
        self._producer = producer
        self._kind = kind
        self._iterated = False

    def __iter__(self) -> Iterator[Item]:
        if self._iterated:
            raise RuntimeError("a run snapshot can be iterated once; read the source again")
        self._iterated = True
        return count_items(self._producer(self.stats), self.stats, self._kind)

    @property
    def suspect(self) -> str | None:
        return self.stats.suspect

    @property
    def iterated(self) -> bool:
        return self._iterated


def count_items(items: Iterator[T], stats: SourceStats, kind: str) -> Iterator[T]:
    """Pass items through, counting runs, operations, quarantined rows and machines seen."""
    read_before = stats.rows_read
    try:
        for item in items:
            if isinstance(item, BadRecord):
                stats.quarantined += 1
            elif isinstance(item, JobOperationRun):
                stats.runs += 1
                stats.machines.add(item.machine)
            else:
                stats.operations += 1
                stats.machines.add(item.machine)
            yield item
    finally:
        SOURCE_ROWS.labels(kind=kind).inc(max(0, stats.rows_read - read_before))
